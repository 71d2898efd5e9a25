"""Helpers shared by the non-HTTP connectors (CSV folders, SQL databases): cursors and timestamps."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sync_pipelines.connectors.errors import ConnectorError


def cursor_column(option: Any, stream: str, tool: str) -> str | None:
    """The `cursor` option is one column name for every stream, or a mapping stream -> column."""
    if option is None or isinstance(option, str):
        return option
    if isinstance(option, dict):
        return option.get(stream)
    raise ConnectorError(f"{tool}: option cursor must be a column name or a mapping stream -> column, got {option!r}")


def parse_timestamp(value: Any, where: str) -> datetime:
    """A cell's timestamp as aware UTC; naive values are taken as UTC, since files rarely carry a zone."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConnectorError(f"{where}: {value!r} is not an ISO 8601 date or datetime") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
