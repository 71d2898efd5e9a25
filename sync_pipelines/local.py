"""What a command needs in a new shell, with nothing exported: a Dagster instance that keeps its runs, and, for the
bundled sandbox stack only, the sandbox's credentials (not secrets: the sandbox accepts nothing else)."""

from __future__ import annotations

import os
from pathlib import Path

from sync_pipelines.sandbox.env import sandbox_env
from sync_pipelines.stack import DEFAULT_STACK

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"
DEFAULT_SANDBOX_CSV_DIR = ".sync_pipelines/sandbox_csv"
FALLBACK_HOME = Path(".sync_pipelines") / "dagster"  # under the current folder when it holds no dagster.yaml


def dagster_home() -> Path:
    """``$DAGSTER_HOME``; else the current folder if it holds a ``dagster.yaml`` (the project folder, as the scripts
    use it); else ``.sync_pipelines/dagster`` in it, created. Set in the environment, so every Dagster process
    this one starts uses the same instance."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = Path.cwd() if (Path.cwd() / "dagster.yaml").is_file() else (Path.cwd() / FALLBACK_HOME)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def uses_bundled_stack() -> bool:
    path = os.environ.get("SYNC_STACK")
    return not path or Path(path).resolve() == DEFAULT_STACK.resolve()


def sandbox_defaults() -> list[str]:
    """For the bundled sandbox stack, the sandbox's URL, CSV folder and credentials wherever the environment sets
    none (a value that is set always wins); the variables filled in. Nothing for any other stack."""
    if not uses_bundled_stack():
        return []
    url = os.environ.get("SANDBOX_URL") or DEFAULT_SANDBOX_URL
    csv_dir = os.environ.get("SANDBOX_CSV_DIR") or DEFAULT_SANDBOX_CSV_DIR
    filled = {key: value for key, value in sandbox_env(url, csv_dir).items() if not os.environ.get(key)}
    os.environ.update(filled)
    return sorted(filled)
