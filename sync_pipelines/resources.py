"""Dagster resources: the warehouse and the tools' connectors, with secrets read from environment variables only."""

from __future__ import annotations

import os
from functools import cache, lru_cache
from pathlib import Path

import dagster as dg

from sync_pipelines.connectors import connect
from sync_pipelines.connectors.rest import RestSpec
from sync_pipelines.stack import DEFAULT_STACK, REST, Stack, Tool, load_stack
from sync_pipelines.warehouse import Warehouse


@lru_cache(maxsize=16)
def _parsed_stack(file: str, modified_ns: int, environment: frozenset) -> Stack:
    return load_stack(file)


def _stack_for(path: str | None) -> Stack:
    """The stack, parsed once per version of its file and of the environment it expands, not on every access (a
    step reads it several times, and parsing and validating takes tens of milliseconds)."""
    file = Path(path or os.environ.get("SYNC_STACK") or DEFAULT_STACK)
    try:
        modified_ns = file.stat().st_mtime_ns
    except OSError:
        return load_stack(path)  # fails with the stack loader's own message
    return _parsed_stack(str(file), modified_ns, frozenset(os.environ.items()))


@cache
def _warehouse(stack_path: str | None, url: str) -> Warehouse:
    """One engine (and one schema check) per process and warehouse, not one per step."""
    return Warehouse(load_stack(stack_path), url)


def rest_spec(tool: Tool) -> RestSpec:
    """A rest tool's whole description, as its connector takes it: the client, each tool stream's request (a stream
    that ``reads`` another uses that one's), and its writes."""
    reads = {stream.reads or name: stream.request.model_copy(update={"id_field": stream.primary_key})
             for name, stream in tool.streams.items() if stream.request}
    return RestSpec(client=tool.client, reads=reads, writes=tool.writes)


class SyncResource(dg.ConfigurableResource):
    """Everything a sync step needs from the outside world: the stack, the warehouse and connectors."""

    # None: the stack's own URL, read when a step runs. A URL given here is config, which Dagster stores in every
    # run's snapshot and shows in the UI: with its password, so definitions never pass one.
    warehouse_url: str | None = None
    stack_path: str | None = None

    @property
    def stack(self) -> Stack:
        """Loaded on use, so environment-dependent URLs are read when a step runs."""
        return _stack_for(self.stack_path)

    @property
    def warehouse(self) -> Warehouse:
        return _warehouse(self.stack_path, self.warehouse_url or self.stack.warehouse.url)

    def connector(self, tool_name: str):
        """A connector for ``tool_name``; a missing credential fails at once, naming its environment variable."""
        tool = self.stack.tools[tool_name]
        credentials = {}
        for key, env in tool.credentials.items():
            value = dg.EnvVar(env).get_value()
            if not value:
                raise dg.Failure(
                    f"{tool_name}: the environment variable {env} (credential {key!r}) is not set",
                    allow_retries=False,
                )
            credentials[key] = value
        files = {"cursor": {s.reads or name: s.cursor for name, s in tool.streams.items() if s.cursor}} \
            if tool.kind in ("csv", "sql") else {}  # files and tables have no API to filter by time: we do
        # a HubSpot record's associations are no property: the connector reads those the mapping names
        associated = {name: sorted({m.source.split(".")[1] for m in s.fields if m.source.startswith("associations.")})
                      for name, s in tool.streams.items()}
        associations = {"associations": {name: types for name, types in associated.items() if types}} \
            if tool.kind == "hubspot" and any(associated.values()) else {}
        described = {"rest": rest_spec(tool)} if tool.kind == REST else {}
        return connect(
            tool.kind, tool.base_url, credentials,
            name=tool_name,
            credential_env=dict(tool.credentials),
            rate_limit=tool.rate_limit.model_dump() if tool.rate_limit else None,
            **files, **associations, **described,
        )
