"""The errors every connector raises, so callers can tell a bad credential from a flaky API."""

from __future__ import annotations


class ConnectorError(Exception):
    """Anything a connector cannot do; the message names the tool and never holds a secret."""

    def __init__(self, message: str, *, tool: str | None = None, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.tool = tool
        self.status = status
        self.code = code


class AuthError(ConnectorError):
    """The API refused the credentials; retrying cannot help, the operator must fix the secret."""


class RateLimitError(ConnectorError):
    """The API kept throttling after every retry, or asked for a wait longer than we accept."""


class ApiError(ConnectorError):
    """The API answered an error status (a 4xx other than auth, or 5xx after every retry)."""


class ResponseError(ConnectorError):
    """The API answered 2xx with a body we cannot use (bad JSON, missing keys, stuck pagination)."""
