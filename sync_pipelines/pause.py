"""Paused integrations: the first step when an integration goes wrong is to stop it, and a stop must hold across
restarts of the daemon, so it is kept in the warehouse (`paused_integrations`, who, when and why), written here only.

While an integration is paused its own schedules and the webhook events of its tools and entities start no run, and
its write-backs and actions write nothing. Extractions and golden records of a shared batch run on (they only read the
tools): a write-back plans what golden records changed since its last complete run, so the first run after `resume`
writes everything held back. A write-back or action shared by several integrations is held while any of them is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync_pipelines.stack import Integration, Stack
from sync_pipelines.warehouse import make_engine

TABLE = "paused_integrations"
_metadata = sa.MetaData()
paused_table = sa.Table(
    TABLE, _metadata,
    sa.Column("integration", sa.Text, primary_key=True),
    sa.Column("paused_by", sa.Text, nullable=False),
    sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)


class UnknownIntegration(ValueError):
    """An integration name the stack file does not declare."""


@dataclass(frozen=True)
class Pause:
    integration: str
    by: str
    at: datetime
    reason: str

    def describe(self) -> str:
        return (f"{self.integration} paused by {self.by} at {self.at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC: "
                f"{self.reason}")


def integration_named(stack: Stack, name: str) -> Integration:
    """The integration called ``name``, or an error naming it and listing the stack's integrations."""
    for integration in stack.integrations:
        if integration.name == name:
            return integration
    known = ", ".join(i.name for i in stack.integrations) or "none"
    raise UnknownIntegration(f"no integration {name!r} in stack {stack.name!r}; its integrations: {known}")


def pause(url: Engine | str, stack: Stack, name: str, by: str, reason: str, now: datetime | None = None) -> Pause:
    """Pause ``name``; pausing a paused integration keeps its first pause (who stopped it, and why)."""
    integration_named(stack, name)
    held = pauses(url)
    if name in held:
        return held[name]
    stopped = Pause(name, by, now or datetime.now(timezone.utc), reason)
    with _engine(url) as engine, engine.begin() as conn:
        paused_table.create(conn, checkfirst=True)
        conn.execute(paused_table.insert().values(integration=name, paused_by=by, paused_at=stopped.at,
                                                  reason=reason))
    return stopped


def resume(url: Engine | str, stack: Stack, name: str) -> Pause | None:
    """End the pause of ``name``; returns the pause it ended, None when it was not paused."""
    integration_named(stack, name)
    ended = pauses(url).get(name)
    if ended is not None:
        with _engine(url) as engine, engine.begin() as conn:
            conn.execute(paused_table.delete().where(paused_table.c.integration == name))
    return ended


def pauses(warehouse: Engine | str) -> dict[str, Pause]:
    """Every paused integration by name (none in a warehouse not created yet, and none is created to say so)."""
    parsed = warehouse.url if isinstance(warehouse, Engine) else sa.engine.make_url(warehouse)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        return {}
    with _engine(warehouse) as engine:
        if not sa.inspect(engine).has_table(TABLE):
            return {}
        with engine.connect() as conn:
            rows = conn.execute(sa.select(paused_table)).all()
    return {row.integration: Pause(row.integration, row.paused_by, _utc(row.paused_at), row.reason)
            for row in rows}


def covers(integration: Integration, tool: str, entities: set[str] | None) -> bool:
    """Whether an integration covers a step of ``tool`` concerning ``entities`` (None: not known): one of its tools,
    and one of its entities when it lists any."""
    return tool in integration.tools and (not integration.entities or entities is None
                                          or bool(entities & set(integration.entities)))


def holding(stack: Stack, held: dict[str, Pause], tool: str, entities: set[str]) -> list[Pause]:
    """The pauses among ``held`` of the integrations covering a step of ``tool`` on ``entities``."""
    return [held[i.name] for i in stack.integrations if i.name in held and covers(i, tool, entities)]


@contextmanager
def _engine(engine_or_url: Engine | str) -> Iterator[Engine]:
    """The engine given, or one made for a URL and disposed of afterwards."""
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    engine = make_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
