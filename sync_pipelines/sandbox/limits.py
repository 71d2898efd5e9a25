"""Rate limits, fault knobs and request statistics of the sandbox, shared by every emulated tool."""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

KNOBS = ("error_rate", "latency_ms", "malformed_page_rate", "schema_drift", "rate_limits", "page_size")
DRIFT_MODES = ("add", "drop", "retype")


@dataclass
class Verdict:
    allowed: bool
    used: int
    limit: int
    window_s: float
    retry_after: int


class RateLimiter:
    """Sliding-window counter per tool (one token per tool in the sandbox)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = defaultdict(deque)

    def hit(self, tool: str, limit: dict[str, float]) -> Verdict:
        now = time.monotonic()
        window = float(limit["per_seconds"])
        allowed_count = int(limit["requests"])
        hits = self._hits[tool]
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= allowed_count:
            retry = max(1, math.ceil(hits[0] + window - now)) if hits else 1
            return Verdict(False, len(hits), allowed_count, window, retry)
        hits.append(now)
        return Verdict(True, len(hits), allowed_count, window, 0)

    def reset(self) -> None:
        self._hits.clear()


class Faults:
    """Knobs set globally or per tool; a tool's own value wins over the global one. ``limits``: each emulated tool's
    documented rate limit (None: it has none), which names the tools a knob may be set for."""

    def __init__(self, limits: dict[str, dict[str, float] | None], rate_limits: bool = True) -> None:
        self.limits = dict(limits)
        self.default_rate_limits = rate_limits
        self.global_knobs: dict[str, Any] = {}
        self.tool_knobs: dict[str, dict[str, Any]] = {}

    def update(self, body: Any) -> None:
        """Merge knobs from `{"error_rate": .1, "hubspot": {...}}` (or `{"tools": {...}}`); null removes a knob,
        `{"reset": true}` clears everything first. Raises ValueError naming the bad key."""
        if not isinstance(body, dict):
            raise ValueError("faults must be a JSON object of knobs and tool names")
        if body.get("reset"):
            self.global_knobs.clear()
            self.tool_knobs.clear()
        tools = dict(body.get("tools") or {})
        for key, value in body.items():
            if key in ("reset", "tools"):
                continue
            if key in self.limits:
                tools[key] = value
            else:
                _merge(self.global_knobs, key, value, "faults")
        for tool, knobs in tools.items():
            if tool not in self.limits:
                raise ValueError(f"faults: unknown tool {tool!r}; expected one of {', '.join(self.limits)}")
            if not isinstance(knobs, dict):
                raise ValueError(f"faults.{tool} must be an object of knobs")
            target = self.tool_knobs.setdefault(tool, {})
            for key, value in knobs.items():
                _merge(target, key, value, f"faults.{tool}")

    def get(self, tool: str, knob: str, default: Any = None) -> Any:
        if knob in self.tool_knobs.get(tool, {}):
            return self.tool_knobs[tool][knob]
        return self.global_knobs.get(knob, default)

    def rate_limit(self, tool: str) -> dict[str, float] | None:
        """The limit in force for a tool, or None when limits are off."""
        setting = self.get(tool, "rate_limits", self.default_rate_limits)
        documented = self.limits.get(tool)
        if setting is False or documented is None:
            return None
        if isinstance(setting, dict):
            return {**documented, **setting}
        return documented

    def as_dict(self) -> dict[str, Any]:
        return {"global": dict(self.global_knobs), "tools": {k: dict(v) for k, v in self.tool_knobs.items() if v},
                "rate_limits_default": self.default_rate_limits}


def _merge(target: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key not in KNOBS:
        raise ValueError(f"{where}: unknown knob {key!r}; expected one of {', '.join(KNOBS)} or a tool name")
    if value is None:
        target.pop(key, None)
        return
    target[key] = _validated(key, value, f"{where}.{key}")


def _validated(key: str, value: Any, where: str) -> Any:
    if key in ("error_rate", "malformed_page_rate"):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ValueError(f"{where} must be a number between 0 and 1, got {value!r}")
    elif key == "latency_ms":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where} must be a non-negative number, got {value!r}")
    elif key == "page_size":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where} must be a positive integer, got {value!r}")
    elif key == "schema_drift":
        modes = value if isinstance(value, (list, dict)) else [value]
        if value is not False and any(m not in DRIFT_MODES for m in modes):
            raise ValueError(f"{where} must be one of {DRIFT_MODES}, a list of them or {{mode: field}}, got {value!r}")
    elif key == "rate_limits":
        if isinstance(value, dict):
            unknown = set(value) - {"requests", "per_seconds"}
            if unknown or not all(isinstance(v, (int, float)) and v > 0 for v in value.values()):
                raise ValueError(f"{where} must be true, false or {{requests: n, per_seconds: s}}, got {value!r}")
        elif not isinstance(value, bool):
            raise ValueError(f"{where} must be true, false or {{requests: n, per_seconds: s}}, got {value!r}")
    return value


class Stats:
    """Per-tool request counts by status, with the 429s, 401s and 5xx called out."""

    def __init__(self) -> None:
        self._by_tool: dict[str, dict[str, Any]] = {}

    def record(self, tool: str, status: int) -> None:
        entry = self._by_tool.setdefault(
            tool, {"requests": 0, "by_status": defaultdict(int), "throttled": 0, "unauthorized": 0, "server_errors": 0})
        entry["requests"] += 1
        entry["by_status"][str(status)] += 1
        entry["throttled"] += status == 429
        entry["unauthorized"] += status == 401
        entry["server_errors"] += status >= 500

    def as_dict(self) -> dict[str, Any]:
        return {tool: {**entry, "by_status": dict(entry["by_status"])} for tool, entry in self._by_tool.items()}

    def reset(self) -> None:
        self._by_tool.clear()
