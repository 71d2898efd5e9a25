"""The one HTTP engine every API connector runs on.

A tool module only declares what is special about its API (paths, auth, where the records and the next-page
token sit); retries, backoff, throttling, pagination, redaction and stats live here, once.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Protocol
from urllib.parse import quote, quote_plus

import orjson
import requests
import urllib3

from sync_pipelines.connectors.errors import (
    ApiError, AuthError, ConnectorError, RateLimitError, ResponseError,
)
from sync_pipelines.core.collector import collector_paused

logger = logging.getLogger("sync_pipelines.connectors")

MASK = "***"
SECRET_QUERY_PARAMS = ("api_key", "apikey", "hapikey", "access_token", "token", "client_secret", "password",
                       "secret", "signature", "sig", "key")
_QUERY_SECRET_RE = re.compile(r"(?i)([?&;](?:%s)=)[^&#\s\"']+" % "|".join(SECRET_QUERY_PARAMS))
_AUTH_HEADER_RE = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?)[^\s\"',;}]+")
# A loose "Bearer x" or "Basic x" outside a header: mask x when it looks like a credential (a digit, or long),
# so prose such as "Basic authentication failed" stays readable.
_BEARER_RE = re.compile(r"(?i)\b((?:bearer|basic)\s+)(?:(?=[\w.~+/=-]*\d)[\w.~+/=-]{8,}|[\w.~+/=-]{20,})")
_MIN_SECRET_LENGTH = 4
MAX_MALFORMED_RETRIES = 2
BODY_CHUNK_BYTES = 1 << 20
ERROR_TEXT_LIMIT = 300


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """Mask the given secret values (also URL-encoded), Authorization headers and secret query parameters."""
    masked = str(text)
    for secret in sorted(_secret_variants(secrets), key=len, reverse=True):
        masked = masked.replace(secret, MASK)
    masked = _AUTH_HEADER_RE.sub(lambda m: m.group(1) + MASK, masked)
    masked = _BEARER_RE.sub(lambda m: m.group(1) + MASK, masked)
    return _QUERY_SECRET_RE.sub(lambda m: m.group(1) + MASK, masked)


def _secret_variants(secrets: Iterable[str]) -> set[str]:
    variants: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LENGTH:
            variants |= {secret, quote(secret, safe=""), quote_plus(secret)}
    return variants


class Redactor:
    """`redact()` bound to one connector's secrets, applied to every log line, message and stat it emits."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = [s for s in secrets if s]

    def add(self, secret: str) -> None:
        if secret:
            self.secrets.append(secret)

    def __call__(self, text: object) -> str:
        return redact(text, self.secrets)


@dataclass(frozen=True)
class Auth:
    """The Authorization header to send, and the values that must never be shown."""

    header: str | None = None
    secrets: tuple[str, ...] = ()

    @classmethod
    def bearer(cls, token: str) -> Auth:
        return cls(f"Bearer {token}", (token,))

    @classmethod
    def basic(cls, user: str, password: str) -> Auth:
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        return cls(f"Basic {encoded}", (password, encoded))

    @classmethod
    def none(cls, *secrets: str) -> Auth:
        return cls(None, tuple(secrets))


@dataclass
class Stats(Mapping):
    """What one connector did; `latency_ms` is the total, with p95 and max beside it. It reads as a mapping
    too (`stats["requests"]`, `dict(stats)`), so callers can store it as is."""

    requests: int = 0
    pages: int = 0
    records: int = 0
    retries: int = 0
    throttled: int = 0
    errors: int = 0
    latency_ms: float = 0.0
    _latencies: list[float] = field(default_factory=list, repr=False)

    def add_latency(self, ms: float) -> None:
        self.latency_ms += ms
        self._latencies.append(ms)

    @property
    def latency_p95_ms(self) -> float:
        if not self._latencies:
            return 0.0
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]

    @property
    def latency_max_ms(self) -> float:
        return max(self._latencies, default=0.0)

    def as_dict(self) -> dict[str, float | int]:
        return {"requests": self.requests, "pages": self.pages, "records": self.records,
                "retries": self.retries, "throttled": self.throttled, "errors": self.errors,
                "latency_ms": round(self.latency_ms, 1), "latency_p95_ms": round(self.latency_p95_ms, 1),
                "latency_max_ms": round(self.latency_max_ms, 1)}

    def __getitem__(self, key: str) -> float | int:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())


_SHARED_LIMITERS: dict[tuple, "RateLimiter"] = {}
_SHARED_LOCK = threading.Lock()


class RateLimiter:
    """Sliding window: at most `requests` request starts within any `per_seconds`, so we stay under the
    vendor's quota instead of learning it from 429s."""

    def __init__(self, requests: int, per_seconds: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (isinstance(requests, int) and requests > 0) or not per_seconds or per_seconds <= 0:
            raise ConnectorError(f"rate_limit needs a positive integer 'requests' and positive 'per_seconds', "
                                 f"got requests={requests!r}, per_seconds={per_seconds!r}")
        self.requests = requests
        self.per_seconds = float(per_seconds)
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    @classmethod
    def from_option(cls, option: dict | None, share_key: tuple | None = None, **kwargs: Any) -> RateLimiter | None:
        """A limiter for the option; with `share_key`, the one limiter every connector of that tool API shares in
        this process, since a vendor counts one budget per token, not per stream."""
        if option is None:
            return None
        if not isinstance(option, dict) or set(option) - {"requests", "per_seconds"}:
            raise ConnectorError(f"rate_limit must look like {{'requests': n, 'per_seconds': s}}, got {option!r}")
        if share_key is None:
            return cls(option.get("requests"), option.get("per_seconds"), **kwargs)
        key = (*share_key, option.get("requests"), option.get("per_seconds"))
        with _SHARED_LOCK:
            if key not in _SHARED_LIMITERS:
                _SHARED_LIMITERS[key] = cls(option.get("requests"), option.get("per_seconds"), **kwargs)
            return _SHARED_LIMITERS[key]

    def acquire(self) -> None:
        with self._lock:
            self._acquire()

    def _acquire(self) -> None:
        while True:
            now = self._clock()
            while self._starts and now - self._starts[0] >= self.per_seconds:
                self._starts.popleft()
            if len(self._starts) < self.requests:
                self._starts.append(now)
                return
            wait = self._starts[0] + self.per_seconds - now
            if wait > 0:
                self._sleep(wait)
            self._starts.popleft()  # slept until it left the window; no float comparison that could spin


def _never_sent(error: Exception) -> bool:
    """Whether a failed call surely never reached the server (no connection was made), so that even a create
    that is not safe to repeat may be sent again."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if isinstance(error, requests.ConnectionError) and error.args \
        else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header, which is either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "nan", "inf" or a negative count is no instruction: the backoff applies, as without the header
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def dig(payload: Any, path: str) -> Any:
    """`dig(body, "paging.next.after")`: the value at a dotted path, or None when any step is missing; an empty
    path is the payload itself (a body that is the list of records). A step that is a number indexes a list."""
    current = payload
    for part in path.split(".") if path else ():
        if isinstance(current, list) and part.isdigit():
            current = current[int(part)] if int(part) < len(current) else None
            continue
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


@dataclass(frozen=True)
class PageRequest:
    """One page's request; paginators derive the next one from it and the page's body."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None

    def identity(self) -> str:
        return repr((self.method, self.path, sorted((self.params or {}).items(), key=str), self.json))


class Paginator(Protocol):
    def next_request(self, request: PageRequest, payload: Any, records: list) -> PageRequest | None: ...


@dataclass(frozen=True)
class NextUrlPaginator:
    """The body holds the next page's path or URL (Salesforce `nextRecordsUrl`), fetched with no parameters."""

    next_path: str

    def next_request(self, request: PageRequest, payload: Any, records: list) -> PageRequest | None:
        next_url = dig(payload, self.next_path)
        return PageRequest("GET", next_url) if next_url else None


@dataclass(frozen=True)
class CursorPaginator:
    """The body holds a token (HubSpot `paging.next.after`, Zendesk `after_cursor`, Asana `next_page.offset`)
    sent back as a query parameter; an optional end-of-stream flag stops (Zendesk `end_of_stream`)."""

    cursor_path: str
    param: str
    stop_path: str | None = None
    drop_params: tuple[str, ...] = ()

    def next_request(self, request: PageRequest, payload: Any, records: list) -> PageRequest | None:
        if self.stop_path and dig(payload, self.stop_path):
            return None
        token = dig(payload, self.cursor_path)
        if token in (None, ""):
            return None
        params = {k: v for k, v in (request.params or {}).items() if k not in self.drop_params}
        return replace(request, params={**params, self.param: token})


@dataclass(frozen=True)
class HasMorePaginator:
    """`has_more` plus the last record's id as `starting_after` (Stripe lists)."""

    flag_path: str = "has_more"
    param: str = "starting_after"
    id_field: str = "id"

    def next_request(self, request: PageRequest, payload: Any, records: list) -> PageRequest | None:
        if not dig(payload, self.flag_path) or not records:
            return None
        return replace(request, params={**(request.params or {}), self.param: records[-1][self.id_field]})


@dataclass(frozen=True)
class OffsetPaginator:
    """An offset and a page size as query parameters: the next offset is this one plus the records read; the end is
    a total (``total_path``) reached, an empty page, or without a total a page shorter than the page size."""

    offset_param: str
    limit_param: str
    limit: int
    total_path: str | None = None

    def next_request(self, request: PageRequest, payload: Any, records: list) -> PageRequest | None:
        params = request.params or {}
        following = int(params.get(self.offset_param) or 0) + len(records)
        total = dig(payload, self.total_path) if self.total_path else None
        if not records or (total is not None and following >= int(total)) or (total is None and
                                                                               len(records) < self.limit):
            return None
        return replace(request, params={**params, self.offset_param: following, self.limit_param: self.limit})


@dataclass(frozen=True)
class PageNumberPaginator:
    """A page number as a query parameter, from ``start``: the end is an empty page or the last page
    (``total_pages_path``)."""

    param: str
    start: int = 1
    total_pages_path: str | None = None

    def next_request(self, request: PageRequest, payload: Any, records: list) -> PageRequest | None:
        params = request.params or {}
        page = int(params.get(self.param) or self.start)
        last = dig(payload, self.total_pages_path) if self.total_pages_path else None
        if not records or (last is not None and page - self.start + 1 >= int(last)):
            return None
        return replace(request, params={**params, self.param: page + 1})


@dataclass(frozen=True)
class LinkHeaderPaginator:
    """The next page's URL in the response's ``Link`` header (``rel="next"``, RFC 8288; GitHub, Shopify), read from
    the client that fetched the page."""

    http: Any  # the HttpClient whose last response it reads

    def next_request(self, request: PageRequest, payload: Any, records: list) -> PageRequest | None:
        following = self.http.last_links.get("next", {}).get("url")
        return PageRequest(request.method, following) if following else None


# Every digit as "0", every other byte but "-" as a space: a run of 19 digits is then a plain substring search.
_DIGITS_AS_ZERO = bytes(48 if 48 <= b <= 57 else b if b == 45 else 32 for b in range(256))
_LONG_INTEGER = b"0" * 19


def parse_json(content: bytes) -> Any:
    """The body parsed by orjson, several times faster than the standard library on large pages. orjson turns
    integers past 64 bits into floats (two ids 1 apart become one), so a body holding 19 digits in a row (2**63 has
    19) is parsed by ``json``, which keeps every integer exact; so is what orjson refuses and ``json`` takes (NaN,
    Infinity, UTF-16, lone surrogates)."""
    if not content or content.isspace():
        return None
    with collector_paused():  # a page's objects hold no cycle
        if content.translate(_DIGITS_AS_ZERO).find(_LONG_INTEGER) == -1:
            try:
                return orjson.loads(content)
            except orjson.JSONDecodeError:
                pass
        return json.loads(content)


def _brings_new_ids(seen: set, records: list, id_field: str) -> bool:
    """Whether a page holds an id not in `seen`, which takes them in; True when ids cannot tell (a record without
    one, or that is not an object), so that the check never stops a read it cannot judge."""
    before = len(seen)
    try:
        seen.update([record.get(id_field) for record in records])
    except (AttributeError, TypeError):
        return True
    return len(seen) > before or None in seen


ErrorCodeReader = Callable[[Any], "str | None"]


def no_error_code(body: Any) -> str | None:
    """For APIs whose error bodies carry no code (plain-text bodies still yield one, see `_error_code`)."""
    return None


@dataclass
class RetryPolicy:
    """How hard to insist: attempts after the first, the backoff curve, and the longest Retry-After we obey."""

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 300.0


@dataclass(frozen=True)
class ReadLimits:
    """Bounds that turn a broken or hostile API into an error instead of a read that never ends or fills memory;
    far beyond what a real read takes. `call_seconds` bounds one call, body included (`timeout` bounds each socket
    read only, so a server dripping a byte at a time would hold a call forever); `body_bytes` one body, counted
    decompressed (a small gzip body can expand to gigabytes); `pages` and `read_bytes` one pagination;
    `stale_pages` the pages in a row that may bring no record id not already read in the pagination (APIs re-send
    a boundary record, never pages of them: a next-page token that moves while the records do not pages forever)."""

    call_seconds: float = 300.0
    body_bytes: int = 256 * 2**20
    pages: int = 500_000
    read_bytes: int = 32 * 2**30
    stale_pages: int = 5

    @classmethod
    def from_option(cls, option: dict | None, tool: str) -> ReadLimits:
        """The `limits` connector option: any of the fields, each a positive number; the defaults for the rest."""
        if option is None:
            return cls()
        known = {f.name for f in fields(cls)}
        if not isinstance(option, dict) or set(option) - known or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in option.values()):
            raise ConnectorError(f"{tool}: option limits must map some of {sorted(known)} to positive numbers, "
                                 f"got {option!r}")
        return cls(**option)


class HttpClient:
    """A `requests.Session` for one tool: joins the base URL with vendor paths, throttles, retries what is
    worth retrying, raises typed errors with redacted messages and counts everything in `stats`."""

    def __init__(self, *, tool: str, base_url: str, auth: Auth, credential_hint: str,
                 error_code: ErrorCodeReader = no_error_code, auth_statuses: tuple[int, ...] = (401, 403),
                 rate_limit_codes: frozenset[str] = frozenset(), rate_limit: dict | None = None,
                 endpoint_limits: dict[str, dict] | None = None,
                 timeout: float = 30.0, retry: RetryPolicy | None = None, limits: ReadLimits | None = None,
                 headers: dict[str, str] | None = None, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, redactor: Redactor | None = None,
                 reauthenticate: Callable[[], Auth] | None = None) -> None:
        self.tool = tool
        self.reauthenticate = reauthenticate  # a new Auth when the API refuses the current one (an expired token)
        self.last_links: dict[str, dict] = {}  # the last successful response's Link header, parsed
        self.base_url = base_url.rstrip("/")
        self.credential_hint = credential_hint
        self.error_code = error_code
        self.auth_statuses = auth_statuses
        self.rate_limit_codes = rate_limit_codes
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.limits = limits or ReadLimits()
        self.bytes_received = 0  # decompressed body bytes, for the per-pagination budget
        self.redact = redactor or Redactor()
        self.stats = Stats()
        self._sleep = sleep
        shared = (tool, self.base_url) if clock is time.monotonic else None  # tests with fake clocks stay private
        self._limiter = RateLimiter.from_option(rate_limit, share_key=shared, clock=clock, sleep=sleep)
        self._endpoint_limiters = {
            prefix: RateLimiter.from_option(option, share_key=shared and (*shared, prefix), clock=clock, sleep=sleep)
            for prefix, option in (endpoint_limits or {}).items()
        }
        self._random = random.Random()
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": "sync-pipelines"})
        self.session.headers.update(headers or {})
        self.use_auth(auth)

    def use_auth(self, auth: Auth) -> None:
        """Send `auth` from now on, its secrets redacted (a token refreshed replaces the last)."""
        for secret in auth.secrets:
            self.redact.add(secret)
        if auth.header:
            self.session.headers["Authorization"] = auth.header

    def url_for(self, path: str) -> str:
        """Relative vendor paths join the base URL; absolute URLs (webhooks, next links) are used as given."""
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                data: Any = None, headers: dict[str, str] | None = None, idempotent: bool = True,
                expect_json: bool = True, stream: str | None = None) -> Any:
        """Send one call, retrying 429, 5xx, network failures and malformed JSON; `idempotent=False` limits
        retries to cases where the API surely did nothing (429, connect timeout). `stream` (the one being read)
        is named in the errors of the read limits."""
        url = self.url_for(path)
        shown = self.redact(f"{method} {url}")
        malformed = 0
        attempt = 0
        reauthenticated = False
        while True:
            if self._limiter:
                self._limiter.acquire()
            for prefix, limiter in self._endpoint_limiters.items():
                if path.startswith(prefix):
                    limiter.acquire()
            self.stats.requests += 1
            started = time.perf_counter()
            deadline = time.monotonic() + self.limits.call_seconds
            try:
                response = self.session.request(method, url, params=params, json=json, data=data, headers=headers,
                                                timeout=self.timeout, stream=True)
                self._read_body(response, deadline, shown, stream)
                broken = None
            except (OSError, urllib3.exceptions.HTTPError) as exc:  # requests' are OSErrors; the body read's urllib3's
                response, broken = None, exc
            if broken is not None:
                # raised here, outside the except block, so that the failure does not carry the driver's exception
                # (whose text holds the whole URL, a secret for some tools) as its context into tracebacks
                self.stats.add_latency((time.perf_counter() - started) * 1000)
                self.stats.errors += 1
                failure = ConnectorError(
                    self.redact(f"{self.tool}: {shown} failed: {type(broken).__name__}: {broken}"), tool=self.tool)
                retryable = idempotent or _never_sent(broken)
                self._wait_or_raise(failure, retryable, attempt, None, shown)
                attempt += 1
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.stats.add_latency(elapsed_ms)
            logger.debug("%s: %s -> HTTP %s in %.0f ms", self.tool, shown, response.status_code, elapsed_ms)
            status = response.status_code
            if status < 400:
                self.last_links = response.links
                if not expect_json:
                    return response.text
                try:
                    return parse_json(response.content)
                except ValueError:
                    self.stats.errors += 1
                    malformed += 1
                    failure = ResponseError(f"{self.tool}: {shown} answered HTTP {status} with a body that is "
                                            f"not JSON: {self._snippet(response)}" + (
                                                "" if idempotent else " (not sent again: the call may have taken "
                                                "effect)"), tool=self.tool, status=status)
                    # the API did the work: only a call that is safe to repeat is sent again
                    self._wait_or_raise(failure, idempotent and malformed <= MAX_MALFORMED_RETRIES, attempt, None,
                                        shown)
                    attempt += 1
                    continue
            self.stats.errors += 1
            code = self._error_code(response)
            if status == 429 or (code and code in self.rate_limit_codes):
                self.stats.throttled += status == 429
                failure = RateLimitError(
                    f"{self.tool}: {shown} was rate limited (HTTP {status} {code or ''}".rstrip() +
                    "); lower rate_limit for this tool in the stack file", tool=self.tool, status=status, code=code)
                self._wait_or_raise(failure, status == 429, attempt,
                                    parse_retry_after(response.headers.get("Retry-After")), shown)
            elif status >= 500:
                failure = ApiError(self._api_message(shown, response, code), tool=self.tool, status=status, code=code)
                self._wait_or_raise(failure, idempotent, attempt, parse_retry_after(
                    response.headers.get("Retry-After")), shown)
            elif status in self.auth_statuses and self.reauthenticate and not reauthenticated:
                self.use_auth(self.reauthenticate())  # once per call: a token just issued and refused is no expiry
                reauthenticated = True
                continue
            elif status in self.auth_statuses:
                raise AuthError(self.redact(
                    f"{self.tool}: the API rejected the credentials (HTTP {status} {code or ''}".rstrip() +
                    f"); check {self.credential_hint}"), tool=self.tool, status=status, code=code)
            else:
                raise ApiError(self._api_message(shown, response, code), tool=self.tool, status=status, code=code)
            attempt += 1

    def paginate(self, request: PageRequest | None, *, records_path: str, paginator: Paginator | None = None,
                 stream: str | None = None, id_field: str = "id") -> Iterator[dict]:
        """Yield every record of every page of `stream`, whose records are told apart by `id_field`. Refused: a next
        page that repeats any earlier request of this pagination (a cursor cycling back), more pages or bytes than
        `limits` allow, and `limits.stale_pages` pages in a row bringing no id not read before in this pagination
        (a cursor that moves over the same records): each would otherwise page forever."""
        asked: set = set()
        seen_ids: set = set()
        stale = pages = 0
        bytes_before = self.bytes_received
        while request is not None:
            if pages >= self.limits.pages:
                raise self._read_limit(stream, request, f"{pages:,} pages read, the most one read may take "
                                                        f"(limits.pages)")
            asked.add(request.identity())
            payload = self.request(request.method, request.path, params=request.params, json=request.json,
                                   stream=stream)
            records = dig(payload, records_path)
            if not isinstance(records, list):
                held = f"its keys: {', '.join(map(str, payload))}" if isinstance(payload, dict) else \
                    f"it is {type(payload).__name__}"
                raise ResponseError(self.redact(
                    f"{self.tool}: {request.method} {request.path} answered without a '{records_path}' list"
                    f"{f' (stream {stream})' if stream else ''}; {held}"), tool=self.tool)
            pages += 1
            self.stats.pages += 1
            yield from records
            received = self.bytes_received - bytes_before
            if received > self.limits.read_bytes:
                raise self._read_limit(stream, request, f"{received:,} bytes received, more than the "
                                                        f"{self.limits.read_bytes:,} one read may take "
                                                        f"(limits.read_bytes)")
            stale = 0 if _brings_new_ids(seen_ids, records, id_field) else stale + 1
            following = paginator.next_request(request, payload, records) if paginator else None
            if following is not None and following.identity() in asked:
                raise ResponseError(self.redact(
                    f"{self.tool}: pagination came back to a page it already read, after "
                    f"{request.method} {request.path}{f' (stream {stream})' if stream else ''}: its next-page "
                    f"token does not move"), tool=self.tool)
            if following is not None and stale >= self.limits.stale_pages:
                raise self._read_limit(stream, request, f"{stale} pages in a row brought no record not already read "
                                                        f"(limits.stale_pages): its next-page token moves, its "
                                                        f"records do not")
            request = following

    def close(self) -> None:
        self.session.close()

    def _read_body(self, response: requests.Response, deadline: float, shown: str, stream: str | None) -> None:
        """Read the body a socket read at a time, decompressed, checking the clock and the size after each one, and
        keep it as the response's content (what `.json()` and `.text` read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                response.close()  # drop the connection: the server may still be sending
                raise self._call_limit(stream, f"{shown} took over {self.limits.call_seconds:g} s "
                                               f"(limits.call_seconds; timeout={self.timeout:g} s bounds each socket "
                                               f"read only)")
            chunk = response.raw.read1(BODY_CHUNK_BYTES, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > self.limits.body_bytes:
                response.close()
                raise self._call_limit(stream, f"{shown} answered a body over {self.limits.body_bytes / 2**20:g} "
                                               f"MiB decompressed (limits.body_bytes)")
            chunks.append(chunk)
        self.bytes_received += size
        response._content = b"".join(chunks)  # where requests keeps a body it read itself
        response._content_consumed = True

    def _where(self, stream: str | None) -> str:
        return f"{self.tool}: reading {stream}" if stream else self.tool

    def _call_limit(self, stream: str | None, what: str) -> ResponseError:
        """A call refused by `limits`; not retried, since the same call would most likely do it again."""
        self.stats.errors += 1
        return ResponseError(self.redact(f"{self._where(stream)}: {what}"), tool=self.tool)

    def _read_limit(self, stream: str | None, request: PageRequest, what: str) -> ResponseError:
        return ResponseError(self.redact(f"{self._where(stream)}: stopped after {request.method} {request.path}: "
                                         f"{what}"), tool=self.tool)

    def _wait_or_raise(self, failure: ConnectorError, retryable: bool, attempt: int, retry_after: float | None,
                       shown: str) -> None:
        if not retryable or attempt >= self.retry.max_retries:
            raise failure
        if retry_after is not None and retry_after > self.retry.max_retry_after:
            raise RateLimitError(f"{failure} (the API asked to wait {retry_after:.0f} s, more than the "
                                 f"{self.retry.max_retry_after:.0f} s we accept)", tool=self.tool,
                                 status=failure.status, code=failure.code)
        delay = retry_after if retry_after is not None else self._backoff(attempt)
        self.stats.retries += 1
        logger.warning("%s: retry %d/%d in %.1f s: %s", self.tool, attempt + 1, self.retry.max_retries, delay,
                       self.redact(failure))
        self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential with equal jitter: half the delay is fixed, half random, so clients do not sync up."""
        ceiling = min(self.retry.backoff_max, self.retry.backoff_base * 2 ** attempt)
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    def _error_code(self, response: requests.Response) -> str | None:
        try:
            code = self.error_code(response.json())
        except ValueError:
            text = response.text.strip()  # plain-text errors such as Slack's `invalid_token`
            code = text if text and len(text) <= 64 and not any(c.isspace() or c in "<{" for c in text) else None
        return self.redact(code) if code else None

    def _api_message(self, shown: str, response: requests.Response, code: str | None) -> str:
        return self.redact(f"{self.tool}: {shown} failed (HTTP {response.status_code}"
                           f"{' ' + code if code else ''}): {self._snippet(response)}")

    def _snippet(self, response: requests.Response) -> str:
        text = " ".join(response.text.split())
        return self.redact(text[:ERROR_TEXT_LIMIT] + ("…" if len(text) > ERROR_TEXT_LIMIT else ""))
