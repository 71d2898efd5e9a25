"""Helpers every emulated vendor shares: time formats, JSON responses, the error a handler raises, schema drift."""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


# What every emulated vendor accepts as an email address (each refuses others with its own error).
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")

class ApiError(Exception):
    """Raised by a handler; the vendor module turns it into that vendor's error body."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


@dataclass
class Call:
    """What a handler needs from the request, read once so handlers stay synchronous."""

    request: Request
    body: bytes
    prefix: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def query(self):
        return self.request.query_params

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise ApiError(400, "INVALID_JSON", f"request body is not valid JSON: {exc}") from exc

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        """An integer query parameter within [low, high]; a bad value is a 400 that names the parameter."""
        raw = self.query.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, "INVALID_PARAMETER", f"{name} must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ApiError(400, "INVALID_PARAMETER", f"{name} must be between {low} and {high}, got {value}")
        return value

    def absolute(self, path_and_query: str) -> str:
        """Absolute URL of a vendor path on this sandbox (for next-page links)."""
        url = self.request.url
        return f"{url.scheme}://{url.netloc}{self.prefix}{path_and_query}"


_EPOCH = date(1970, 1, 1)


def now_ms() -> int:
    return int(time.time() * 1000)


@functools.lru_cache(maxsize=4096)
def _utc_day(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).isoformat()


def _utc_seconds(ms: int) -> str:
    """2026-11-01T12:34:56, from integer arithmetic and the day's text (a few thousand days at most, so cached):
    several times faster than datetime's strftime, on every record of every page."""
    day, seconds = divmod(int(ms) // 1000, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_utc_day(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}"


def iso_ms(ms: int) -> str:
    """2026-11-01T12:34:56.789Z (HubSpot, Asana)."""
    return f"{_utc_seconds(ms)}.{ms % 1000:03d}Z"


def iso_s(ms: int) -> str:
    """2026-11-01T12:34:56Z (Zendesk)."""
    return f"{_utc_seconds(ms)}Z"


def iso_offset(ms: int) -> str:
    """2026-11-01T12:34:56+00:00 (Mailchimp)."""
    return f"{_utc_seconds(ms)}+00:00"


def sf_datetime(ms: int) -> str:
    """2026-11-01T12:34:56.000+0000 (Salesforce)."""
    return f"{_utc_seconds(ms)}.{ms % 1000:03d}+0000"


def parse_datetime(text: str, what: str) -> int:
    """Epoch ms of an ISO 8601 datetime or date (Z, +0000 or +00:00 offsets); a 400 naming `what` otherwise."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    if len(value) > 5 and value[-5] in "+-" and value[-3] != ":":
        value = value[:-2] + ":" + value[-2:]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "INVALID_DATETIME", f"{what}: {text!r} is not an ISO 8601 datetime") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


# orjson renders pages several times faster; datetimes, dataclasses and other objects still go through `str`.
_ORJSON_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_SUBCLASS)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The body as the vendors send it; text orjson refuses (an unpaired surrogate a client once sent) goes out as
    the JSON escape it came in as, which is what the real APIs echo back."""
    try:
        body = orjson.dumps(data, default=str, option=_ORJSON_OPTIONS)
    except TypeError:
        body = json.dumps(data, default=str).encode()
    return Response(body, status, headers=headers, media_type="application/json")


DRIFT_FIELD = "sandbox_drift_field"


def apply_drift(record: dict[str, Any], spec: Any, default_field: str) -> dict[str, Any]:
    """Change a record's shape the way vendors do without notice: add a field, drop one, or change its type.

    `spec` is "add", "drop", "retype", a list of them, or a dict {mode: field name}.
    """
    if not spec:
        return record
    modes = spec if isinstance(spec, dict) else {m: default_field for m in ([spec] if isinstance(spec, str) else spec)}
    for mode, name in modes.items():
        name = name or default_field
        if mode == "add":
            record[DRIFT_FIELD if name == default_field else name] = "surprise"
        elif mode == "drop":
            record.pop(name, None)
        elif mode == "retype" and name in record:
            record[name] = _retyped(record[name])
    return record


def _retyped(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return 0
    return {"value": value}
