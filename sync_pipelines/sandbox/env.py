"""The environment a process needs to sync against a running sandbox: its (non-secret) credentials and URLs."""

from __future__ import annotations

from pathlib import Path

SANDBOX_ENV_FILE = Path(__file__).parents[1] / "stacks" / "sandbox.env"


def sandbox_env(url: str, csv_dir: str | Path) -> dict[str, str]:
    """Variables for the bundled sandbox stack: the credentials the sandbox accepts, its URL and CSV folder."""
    env = {}
    for line in SANDBOX_ENV_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    env.update(SANDBOX_URL=url, SANDBOX_CSV_DIR=str(csv_dir),
               SLACK_WEBHOOK_URL=f"{url}/slack/services/T000SANDBOX/B000SANDBOX/sandbox-slack-secret")
    return env


def sandbox_credentials() -> dict[str, dict[str, str]]:
    """Per tool of the bundled sandbox stack, the credentials the sandbox accepts, as ``connect()`` takes them."""
    from sync_pipelines.stack import DEFAULT_STACK, load_stack

    env = sandbox_env("http://127.0.0.1", ".")
    return {name: {key: env[var] for key, var in tool.credentials.items()}
            for name, tool in load_stack(DEFAULT_STACK).tools.items() if tool.credentials}
