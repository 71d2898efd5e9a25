"""What every connector shares: options and credential checks, `since` parsing, the read/write contract, and
`ApiConnector`, which turns a tool's declarative `ToolSpec` into a configured `HttpClient`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable, ClassVar, Iterable, Iterator

from sync_pipelines.connectors.errors import ApiError, ConnectorError
from sync_pipelines.connectors.http import (
    Auth, ErrorCodeReader, HttpClient, ReadLimits, Redactor, RetryPolicy, Stats, dig, no_error_code,
)

COMMON_OPTIONS = frozenset({"name", "credential_env", "rate_limit", "endpoint_limits", "timeout", "page_size",
                            "max_retries", "limits", "fields",
                            "sleep", "clock", "session", "backoff_base"})


@dataclass
class Options:
    """The options `connect()` accepts for every kind; `extra` holds the kind's own (e.g. asana `project`)."""

    name: str
    credential_env: dict[str, str] = field(default_factory=dict)
    rate_limit: dict | None = None
    endpoint_limits: dict[str, dict] | None = None  # None: the vendor's documented ones (ToolSpec)
    timeout: float = 30.0
    page_size: int | None = None
    max_retries: int = 5
    limits: dict | None = None  # ReadLimits fields; None: the defaults
    backoff_base: float = 0.5
    fields: dict[str, list[str]] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    session: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, kind: str, raw: dict[str, Any], extra_allowed: frozenset[str]) -> Options:
        unknown = set(raw) - COMMON_OPTIONS - extra_allowed
        if unknown:
            raise ConnectorError(f"{raw.get('name', kind)}: unknown option(s) {sorted(unknown)} for kind '{kind}'; "
                                 f"allowed: {sorted(COMMON_OPTIONS | extra_allowed)}")
        known = {k: v for k, v in raw.items() if k in COMMON_OPTIONS and v is not None}
        options = cls(name=known.pop("name", kind), extra={k: raw[k] for k in extra_allowed if k in raw}, **known)
        for option in ("timeout", "page_size", "max_retries"):
            value = getattr(options, option)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0
                                      or (option == "page_size" and value < 1)):
                raise ConnectorError(f"{options.name}: option {option} must be a positive number, got {value!r}")
        if not isinstance(options.fields, dict):
            raise ConnectorError(f"{options.name}: option fields must map a stream to a list of field names, "
                                 f"got {options.fields!r}")
        return options

    def env_var(self, key: str) -> str:
        """The environment variable that holds a credential, named in messages so operators know what to fix."""
        return self.credential_env.get(key) or f"{self.name.upper()}_{key.upper()}"

    def credential_hint(self, keys: Iterable[str]) -> str:
        names = [self.env_var(k) for k in keys]
        if not names:
            return "the tool's settings (it takes no credentials)"
        if len(names) == 1:
            return f"the environment variable {names[0]}"
        return f"the environment variables {', '.join(names[:-1])} and {names[-1]}"


def normalize_credentials(credentials: Any, keys: tuple[str, ...], options: Options) -> dict[str, str]:
    """A dict with every key of `keys` set, accepting a plain string when the kind needs one secret."""
    if isinstance(credentials, str) and len(keys) == 1:
        credentials = {keys[0]: credentials}
    if not isinstance(credentials, dict):
        raise ConnectorError(f"{options.name}: credentials must be a dict with keys {list(keys)}, "
                             f"got {type(credentials).__name__}")
    missing = [k for k in keys if not isinstance(credentials.get(k), str) or not credentials[k].strip()]
    if missing:
        raise ConnectorError(f"{options.name}: credentials lack {missing}; set {options.credential_hint(missing)}")
    return {k: credentials[k].strip() for k in keys}


def parse_since(since: datetime | date | str | None, tool: str) -> datetime | None:
    """`since` as an aware UTC datetime; a bare date means its midnight UTC, a naive datetime is refused."""
    if since is None:
        return None
    value = since
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            value = datetime.fromisoformat(text) if "T" in text or " " in text else date.fromisoformat(text)
        except ValueError:
            raise ConnectorError(f"{tool}: since={since!r} is not an ISO 8601 date or datetime") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if not isinstance(value, datetime):
        raise ConnectorError(f"{tool}: since must be a datetime or ISO string, got {type(since).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConnectorError(f"{tool}: since={since!r} has no time zone; pass an aware datetime such as "
                             "2026-09-01T00:00:00+00:00")
    return value.astimezone(timezone.utc)


def result(ok: bool, id: Any = None, created: bool | None = None, error: str | None = None) -> dict[str, Any]:
    """One write outcome, the shape the contract promises for each input record."""
    return {"ok": ok, "id": None if id is None else str(id), "created": created, "error": error}


def chunked(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def batches(items: Iterable, size: int) -> Iterator[list]:
    """``chunked`` for an iterator read as it goes (a paginated read), never whole."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Connector:
    """The contract: `read(stream, since)` yields dicts across every page; `write(stream, records, mode, key)`
    returns one result per record; `stats` counts the work. Subclasses implement `_read` and `_write`."""

    kind: ClassVar[str]
    streams: ClassVar[tuple[str, ...] | None] = None  # None: any stream name (files, tables)
    write_streams: ClassVar[tuple[str, ...] | None] = None
    write_modes: ClassVar[tuple[str, ...]] = ("upsert",)
    extra_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: Options) -> None:
        self.options = options
        self.name = options.name
        self.redact = Redactor()
        self._stats = Stats()

    @property
    def stats(self) -> Stats:
        return self._stats

    def read(self, stream: str, since: datetime | date | str | None = None) -> Iterator[dict]:
        self._check_stream(stream, self.streams, "read")
        since_utc = parse_since(since, self.name)
        for record in self._read(stream, since_utc):
            self.stats.records += 1
            yield record

    def write(self, stream: str, records: Iterable[dict], mode: str = "upsert",
              key: str | None = None) -> list[dict[str, Any]]:
        self._check_stream(stream, self.write_streams, "write")
        if mode not in self.write_modes:
            raise ConnectorError(f"{self.name}: write mode {mode!r} is not supported; "
                                 f"use one of {list(self.write_modes)}")
        rows = list(records)
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ConnectorError(f"{self.name}: record #{index} for {stream} is a {type(row).__name__}, not a dict")
        return self._write(stream, rows, mode, key) if rows else []

    def fields_for(self, stream: str) -> list[str] | None:
        return self.options.fields.get(stream)

    def list_ids(self, stream: str, key: str) -> list:
        """The id (the value at ``key``, a dotted path; None where a record has none) of every record the tool holds
        in ``stream`` now: a deletion scan's listing."""
        self._check_stream(stream, self.streams, "list")
        return self._list_ids(stream, key)

    def _list_ids(self, stream: str, key: str) -> list:
        """By default the stream read whole, asking only for ``key`` where the API takes a field list (Asana's
        opt_fields, Salesforce's SELECT, HubSpot's properties); records the API sends as deleted are listed too,
        which deletes nothing: their marker did."""
        asked = self.options.fields
        self.options.fields = {**asked, stream: [key]}
        try:
            return [dig(record, key) for record in self._read(stream, None)]
        finally:
            self.options.fields = asked

    def undo_create(self, stream: str, record_id: str) -> str:
        """Undo a record an action created, where the tool allows it, saying what became of it; a tool that offers
        no safe way keeps it (it may already be in use) and says so."""
        return (f"not undone: {self.kind} {stream} are kept (one may already be in use); delete it in the tool if "
                "unwanted")

    def find_created(self, stream: str, key: str) -> str | None:
        """The id of the record a create under idempotency ``key`` made, None when there is none: how a create a
        crash interrupted is told from one that never reached the tool. A target that cannot tell refuses, so that
        nothing is ever created twice by guessing."""
        raise ConnectorError(f"{self.name}: cannot tell whether a create under idempotency key {key!r} reached "
                             f"{stream}; check the tool and remove the intent from action_pending")

    def close(self) -> None:
        """Release sessions or engines; a connector is also a context manager."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_stream(self, stream: str, allowed: tuple[str, ...] | None, action: str) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConnectorError(f"{self.name}: stream must be a non-empty string, got {stream!r}")
        if allowed is not None and stream not in allowed:
            raise ConnectorError(f"{self.name}: cannot {action} stream {stream!r}; "
                                 f"{self.kind} supports {list(allowed) or 'none'}")

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        raise NotImplementedError

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        raise NotImplementedError


@dataclass(frozen=True)
class ToolSpec:
    """What sets one API apart, declared rather than coded: credentials, auth, error-code location, limits."""

    credential_keys: tuple[str, ...]
    auth: Callable[[dict[str, str]], Auth]
    error_code: ErrorCodeReader = no_error_code
    auth_statuses: tuple[int, ...] = (401, 403)
    rate_limit_codes: frozenset[str] = frozenset()
    headers: dict[str, str] = field(default_factory=dict)
    page_size: int = 100
    # Budgets some endpoints have on top of the tool's own: path prefix -> {"requests": n, "per_seconds": s}.
    endpoint_limits: dict[str, dict] = field(default_factory=dict)


class ApiConnector(Connector):
    """A connector speaking HTTP through one `HttpClient` configured from the class's `spec`."""

    spec: ClassVar[ToolSpec]

    def __init__(self, base_url: str, credentials: Any, options: Options) -> None:
        super().__init__(options)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConnectorError(f"{self.name}: base_url must be an http(s) URL, got {base_url!r}")
        self.credentials = normalize_credentials(credentials, self.spec.credential_keys, options)
        for secret in self.credentials.values():
            self.redact.add(secret)
        self.http = HttpClient(
            tool=self.name, base_url=base_url, auth=self.spec.auth(self.credentials),
            credential_hint=options.credential_hint(self.spec.credential_keys), error_code=self.spec.error_code,
            auth_statuses=self.spec.auth_statuses, rate_limit_codes=self.spec.rate_limit_codes,
            rate_limit=options.rate_limit, timeout=options.timeout,
            endpoint_limits=self.spec.endpoint_limits if options.endpoint_limits is None else options.endpoint_limits,
            headers=self.spec.headers,
            retry=RetryPolicy(max_retries=options.max_retries, backoff_base=options.backoff_base),
            limits=ReadLimits.from_option(options.limits, self.name),
            session=options.session, sleep=options.sleep, clock=options.clock, redactor=self.redact)
        self._stats = self.http.stats

    @property
    def page_size(self) -> int:
        return self.options.page_size or self.spec.page_size

    def close(self) -> None:
        self.http.close()

    def _write_batch(self, batch: list[dict], send: Callable[[list[dict]], list[dict[str, Any]]]) -> list[dict]:
        """Run one write call; an API refusal of the whole batch becomes a failed result per record, while
        auth and rate-limit failures still raise, since every later batch would fail the same way."""
        try:
            return send(batch)
        except ApiError as exc:
            return [result(False, error=str(exc)) for _ in batch]
