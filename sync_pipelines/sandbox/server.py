"""Running the sandbox: blocking `serve` for the CLI, `running_sandbox` in a background thread for tests."""

from __future__ import annotations

import contextlib
import socket
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


class RunningSandbox:
    """A sandbox serving on `url`; the helpers call its control plane in-process."""

    def __init__(self, app: Starlette, url: str) -> None:
        self.app, self.url = app, url

    @property
    def state(self) -> SandboxState:
        return self.app.state.sandbox

    def base_url(self, tool: str) -> str:
        return f"{self.url}/{tool}"

    def truth(self, part: str = "", **params: str) -> Any:
        """`truth()`, `truth("people")`, `truth("conflicts")`, `truth("records", tool=..., stream=...)`."""
        path = "/_sandbox/truth" + (f"/{part}" if part else "")
        response = requests.get(self.url + path, params=params, timeout=60)
        response.raise_for_status()
        return response.json()

    def set_faults(self, faults: dict[str, Any] | None = None, **knobs: Any) -> dict[str, Any]:
        """Merge fault knobs (see POST /_sandbox/faults); `set_faults(reset=True)` clears them."""
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
