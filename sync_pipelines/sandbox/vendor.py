"""What every emulated tool shares: its routes are guarded by auth, limits and faults, in its own error shape."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Callable

from starlette.requests import Request
from starlette.responses import Response

from .common import Call, apply_drift, json_response
from .limits import Verdict
from .table import Table

if TYPE_CHECKING:
    from .app import SandboxState

Handler = Callable[[Call], Response]


class Vendor:
    """Base of one tool's emulation; subclasses add `routes()` and the vendor's error body."""

    tool: str = ""
    default_credential: Any = None
    rate_limit: dict[str, float] | None = None  # the documented limit: ``requests`` per ``per_seconds``
    # Per stream, the field that schema drift drops or retypes by default.
    drift_fields: dict[str, str] = {}

    def __init__(self, state: "SandboxState") -> None:
        self.state = state

    @property
    def world(self):
        return self.state.world

    def table(self, stream: str) -> Table | None:
        return self.world.table(self.tool, stream)

    def routes(self) -> list[tuple[str, str, Handler, bool]]:
        """(method, path, handler, counts against the rate limit) for every vendor endpoint."""
        raise NotImplementedError

    def error_body(self, status: int, code: str, message: str, **extra: Any) -> Any:
        raise NotImplementedError

    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
              **extra: Any) -> Response:
        return json_response(self.error_body(status, code, message, **extra), status, headers)

    def authorized(self, request: Request, credential: Any) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {credential}"

    def unauthorized(self) -> Response:
        return self.error(401, "UNAUTHORIZED", "The credentials are missing or invalid.")

    def throttled(self, verdict: Verdict) -> Response:
        return self.error(429, "RATE_LIMITED", f"Rate limit of {verdict.limit} requests per "
                          f"{verdict.window_s:g} s exceeded.", headers={"Retry-After": str(verdict.retry_after)})

    def limit_headers(self, verdict: Verdict | None) -> dict[str, str]:
        return {}

    def on_change(self, table: Table, row: int, kind: str) -> None:
        """Hook after a write or mutation (`kind` is created/updated/deleted)."""

    def page_size(self, requested: int) -> int:
        override = self.state.faults.get(self.tool, "page_size")
        return int(override) if override else requested

    def drift(self, stream: str, record: dict[str, Any]) -> dict[str, Any]:
        spec = self.state.faults.get(self.tool, "schema_drift")
        return apply_drift(record, spec, self.drift_fields.get(stream, "")) if spec else record


def basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password
