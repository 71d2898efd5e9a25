"""Running the sandbox: blocking `serve` for the CLI, `running_sandbox` in a background thread for tests,
`sandbox_process` in a process of its own for benchmarks."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import requests
import uvicorn
from starlette.applications import Starlette

from .app import SandboxState, build_app


def serve(port: int, seed: int = 42, scale: float = 1.0, csv_dir: str | Path | None = None,
          host: str = "127.0.0.1", rate_limits: bool = True, webhook_url: str | None = None, **kw: Any) -> None:
    """Serve the sandbox until interrupted; with `webhook_url`, record changes are also sent there as webhooks."""
    app = build_app(seed=seed, scale=scale, csv_dir=csv_dir, rate_limits=rate_limits, webhook_url=webhook_url, **kw)
    uvicorn.run(app, host=host, port=port, log_level="warning")


class SandboxClient:
    """A sandbox reached only over HTTP, as a remote vendor would be: its control plane under `/_sandbox`."""

    def __init__(self, url: str) -> None:
        self.url = url

    def base_url(self, tool: str) -> str:
        return f"{self.url}/{tool}"

    def truth(self, part: str = "", **params: str) -> Any:
        """`truth()`, `truth("people")`, `truth("conflicts")`, `truth("company_conflicts")`,
        `truth("records", tool=..., stream=...)`."""
        path = "/_sandbox/truth" + (f"/{part}" if part else "")
        return self._control("GET", path, params=params)

    def set_faults(self, faults: dict[str, Any] | None = None, **knobs: Any) -> dict[str, Any]:
        """Merge fault knobs (see POST /_sandbox/faults); `set_faults(reset=True)` clears them."""
        return self._control("POST", "/_sandbox/faults", json={**(faults or {}), **knobs})

    def stats(self, reset: bool = False) -> dict[str, Any]:
        stats = self._control("GET", "/_sandbox/stats")
        if reset:
            self._control("POST", "/_sandbox/stats/reset")
        return stats

    def mutate(self, tool: str, stream: str, record_id: Any, changes: dict[str, Any]) -> dict[str, Any]:
        return self._control("POST", "/_sandbox/mutate",
                             json={"tool": tool, "stream": stream, "id": record_id, "changes": changes})

    def _control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, self.url + path, timeout=60, **kwargs)
        response.raise_for_status()
        return response.json()


class RunningSandbox(SandboxClient):
    """A sandbox serving on `url` from this process; the helpers call its control plane in-process."""

    def __init__(self, app: Starlette, url: str) -> None:
        super().__init__(url)
        self.app = app

    @property
    def state(self) -> SandboxState:
        return self.app.state.sandbox

    def set_faults(self, faults: dict[str, Any] | None = None, **knobs: Any) -> dict[str, Any]:
        with self.state.lock:
            self.state.faults.update({**(faults or {}), **knobs})
            return self.state.faults.as_dict()

    def stats(self, reset: bool = False) -> dict[str, Any]:
        with self.state.lock:
            stats = self.state.stats.as_dict()
            if reset:
                self.state.stats.reset()
                self.state.limiter.reset()
            return stats

    def mutate(self, tool: str, stream: str, record_id: Any, changes: dict[str, Any]) -> dict[str, Any]:
        with self.state.lock:
            return self.state.mutate({"tool": tool, "stream": stream, "id": record_id, "changes": changes})


@contextlib.contextmanager
def serving(app: Starlette, host: str = "127.0.0.1", name: str = "sandbox") -> Iterator[str]:
    """Serve any starlette app on a free port in a background thread; yields its URL and stops it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=name)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the {name} server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def running_sandbox(seed: int = 42, scale: float = 1.0, csv_dir: str | Path | None = None,
                    rate_limits: bool = True, host: str = "127.0.0.1", webhook_url: str | None = None,
                    **kw: Any) -> Iterator[RunningSandbox]:
    """Start the sandbox on a free port in a background thread; stops it (and its webhook sender) on exit."""
    app = build_app(seed=seed, scale=scale, csv_dir=csv_dir, rate_limits=rate_limits, webhook_url=webhook_url, **kw)
    try:
        with serving(app, host) as url:
            yield RunningSandbox(app, url)
    finally:
        if app.state.sandbox.webhooks is not None:
            app.state.sandbox.webhooks.close()


@contextlib.contextmanager
def sandbox_process(seed: int = 42, scale: float = 1.0, csv_dir: str | Path | None = None,
                    rate_limits: bool = True, host: str = "127.0.0.1",
                    start_timeout: float = 600.0) -> Iterator[SandboxClient]:
    """Start the sandbox in a process of its own, as the vendors are remote: it then takes no CPU time (nor the
    GIL) from the process that syncs. Yields a client of its control plane; stops the process on exit."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    options = {"seed": seed, "scale": scale, "csv_dir": None if csv_dir is None else str(csv_dir), "host": host,
               "rate_limits": rate_limits}
    # A fresh interpreter, not multiprocessing: that would re-run the caller's main module in the child.
    command = ("import json, sys; from sync_pipelines.sandbox import serve; "
               "serve(int(sys.argv[1]), **json.loads(sys.argv[2]))")
    process = subprocess.Popen([sys.executable, "-c", command, str(port), json.dumps(options)])
    client = SandboxClient(f"http://{host}:{port}")
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                client.stats()
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the sandbox process did not start (exit code {process.poll()})") from None
                time.sleep(0.05)
        yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
