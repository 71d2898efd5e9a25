"""Slack incoming webhooks: the secret is the path; what was posted is kept for tests to read."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .common import ApiError, Call
from .vendor import Vendor


class Slack(Vendor):
    tool = "slack"
    default_credential = "T000SANDBOX/B000SANDBOX/sandbox-slack-secret"

    def __init__(self, state) -> None:
        super().__init__(state)
        self.messages: list[dict[str, Any]] = []

    def routes(self):
        return [("POST", "/services/{team}/{bot}/{secret}", self.post, False)]

    def error_body(self, status: int, code: str, message: str, **extra: Any) -> Any:
        return code.lower()

    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
              **extra: Any) -> Response:
        return PlainTextResponse(self.error_body(status, code, message), status, headers=headers)

    def authorized(self, request: Request, credential: Any) -> bool:
        return request.url.path.endswith(f"/services/{credential}")

    def unauthorized(self) -> Response:
        return self.error(403, "invalid_token", "invalid_token")

    def post(self, call: Call) -> Response:
        payload = call.json()
        if not isinstance(payload, dict):
            raise ApiError(400, "invalid_payload", "invalid_payload")
        if not payload.get("text") and not payload.get("blocks"):
            raise ApiError(400, "no_text", "no_text")
        self.messages.append(payload)
        return PlainTextResponse("ok")
