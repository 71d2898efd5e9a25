"""Real-time changes: a receiver for HubSpot, Stripe and Zendesk webhooks that checks each vendor's signature and
lands accepted events in the warehouse's `webhook_inbox` table, for the pipeline to pick up between scheduled runs.

The signing helpers follow the vendors' documented schemes and are the single implementation: the receiver
verifies with them, and the sandbox signs the webhooks it sends with them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sync_pipelines.connectors import TOOL_KINDS
from sync_pipelines.connectors.hubspot import ASSOCIATIONS

log = logging.getLogger(__name__)

TOLERANCE_S = 300
MAX_BODY_BYTES = 1024 * 1024  # vendors' events are a few kB; a larger post is refused before it fills memory
MAX_DEPTH = 64  # vendors' events nest a few levels; far below where json recurses out of stack, wherever it is read
INBOX_TABLE = "webhook_inbox"
# the kinds that sign their webhooks (connectors/kinds.py), each with the variable holding its signing secret
SECRET_ENV = {name: kind.webhook_secret_env for name, kind in TOOL_KINDS.items() if kind.webhooks}
HUBSPOT_STREAMS = {"contact": "contacts", "company": "companies", "deal": "deals"}
ASSOCIATION_CHANGE = ".associationChange"
# HubSpot signs the URI with these escapes decoded (its v3 validation guide lists them).
_HUBSPOT_DECODED = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
                    "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}

_metadata = sa.MetaData()
inbox = sa.Table(
    INBOX_TABLE, _metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tool", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("object_type", sa.Text, nullable=False),
    sa.Column("object_id", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("skipped", sa.Text, nullable=True),  # why a processed event started no run (our own echo, a pause)
    sa.UniqueConstraint("tool", "event_id", name="uq_webhook_inbox_tool_event"),
)


class SignatureError(Exception):
    """Why a webhook's signature was refused; the message names headers, never the secret."""


class BodyTooLarge(Exception):
    """A webhook body over MAX_BODY_BYTES, refused before or while it is read."""


class PayloadError(ValueError):
    """A correctly signed webhook whose body is not the vendor's event shape."""


@dataclass(frozen=True)
class InboxEvent:
    """One accepted vendor event, as it lands in the inbox."""

    event_id: str
    object_type: str
    object_id: str
    payload: Any


# --- signing: one implementation per vendor, used to sign (sandbox) and to verify (receiver) ---

def _hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def hubspot_uri(url: str) -> str:
    """The URI as HubSpot signs it: the full request URL with its listed percent-escapes decoded."""
    for escaped, char in _HUBSPOT_DECODED.items():
        url = url.replace(escaped, char).replace(escaped.lower(), char)
    return url


def hubspot_signature(secret: str, method: str, url: str, body: bytes, timestamp_ms: int | str) -> str:
    """X-HubSpot-Signature-v3: base64 of HMAC-SHA256(client secret, method + URI + body + timestamp)."""
    message = method.upper().encode() + hubspot_uri(url).encode() + body + str(timestamp_ms).encode()
    return base64.b64encode(_hmac_sha256(secret, message)).decode()


def stripe_signature(secret: str, timestamp_s: int | str, body: bytes) -> str:
    """A Stripe-Signature `v1` value: hex HMAC-SHA256(endpoint secret, "{t}.{body}")."""
    return hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()


def zendesk_signature(secret: str, timestamp: str, body: bytes) -> str:
    """X-Zendesk-Webhook-Signature: base64 of HMAC-SHA256(signing secret, timestamp + body)."""
    return base64.b64encode(_hmac_sha256(secret, timestamp.encode() + body)).decode()


def _sign_hubspot(secret: str, method: str, url: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = str(int(now * 1000))
    return {"X-HubSpot-Signature-v3": hubspot_signature(secret, method, url, body, timestamp),
            "X-HubSpot-Request-Timestamp": timestamp}


def _sign_stripe(secret: str, method: str, url: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {"Stripe-Signature": f"t={timestamp},v1={stripe_signature(secret, timestamp, body)}"}


def _sign_zendesk(secret: str, method: str, url: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = datetime.fromtimestamp(int(now), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"X-Zendesk-Webhook-Signature": zendesk_signature(secret, timestamp, body),
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp}


# --- verifying ---

def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SignatureError(f"missing {name} header")
    return value


def _is_short_number(value: str) -> bool:
    """Up to 15 ASCII digits: str.isdigit() also passes '²', which int() refuses, and int() refuses 4301+ digits."""
    return value.isascii() and value.isdigit() and len(value) <= 15


def _check_fresh(sent_s: float, now: float, header: str) -> None:
    if now - sent_s > TOLERANCE_S:
        raise SignatureError(f"{header} is older than {TOLERANCE_S // 60} minutes (stale or replayed)")
    if sent_s - now > TOLERANCE_S:
        raise SignatureError(f"{header} is more than {TOLERANCE_S // 60} minutes in the future")


def _check_equal(expected: str, given: str, header: str) -> None:
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignatureError(f"{header} does not match the request (wrong secret or altered body)")


def _verify_hubspot(secret: str, method: str, url: str, headers: Mapping[str, str], body: bytes,
                    now: float) -> None:
    signature = _required(headers, "X-HubSpot-Signature-v3")
    timestamp = _required(headers, "X-HubSpot-Request-Timestamp")
    if not _is_short_number(timestamp):
        raise SignatureError("X-HubSpot-Request-Timestamp must be epoch milliseconds")
    _check_fresh(int(timestamp) / 1000, now, "X-HubSpot-Request-Timestamp")
    _check_equal(hubspot_signature(secret, method, url, body, timestamp), signature, "X-HubSpot-Signature-v3")


def _verify_stripe(secret: str, method: str, url: str, headers: Mapping[str, str], body: bytes,
                   now: float) -> None:
    header = _required(headers, "Stripe-Signature")
    pairs = [part.strip().partition("=") for part in header.split(",")]
    timestamps = [value for key, _, value in pairs if key == "t"]
    signatures = [value for key, _, value in pairs if key == "v1"]
    if len(timestamps) != 1 or not _is_short_number(timestamps[0]):
        raise SignatureError("Stripe-Signature must carry one t=<unix seconds>")
    if not signatures:
        raise SignatureError("Stripe-Signature carries no v1 signature")
    _check_fresh(int(timestamps[0]), now, "Stripe-Signature timestamp")
    expected = stripe_signature(secret, timestamps[0], body).encode()
    # Every v1 is compared, so timing does not reveal which one (if any) matched.
    matches = [hmac.compare_digest(expected, given.encode()) for given in signatures]
    if not any(matches):
        raise SignatureError("no Stripe-Signature v1 matches the request (wrong secret or altered body)")


def _zendesk_time(timestamp: str) -> float:
    if _is_short_number(timestamp):
        return float(timestamp)
    try:
        parsed = datetime.fromisoformat(timestamp)
    except ValueError:
        raise SignatureError("X-Zendesk-Webhook-Signature-Timestamp is not an ISO 8601 time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def _verify_zendesk(secret: str, method: str, url: str, headers: Mapping[str, str], body: bytes,
                    now: float) -> None:
    signature = _required(headers, "X-Zendesk-Webhook-Signature")
    timestamp = _required(headers, "X-Zendesk-Webhook-Signature-Timestamp")
    _check_fresh(_zendesk_time(timestamp), now, "X-Zendesk-Webhook-Signature-Timestamp")
    _check_equal(zendesk_signature(secret, timestamp, body), signature, "X-Zendesk-Webhook-Signature")


# --- event shapes ---

def _parsed(body: bytes) -> Any:
    """The body's JSON, refused past MAX_DEPTH levels: the inbox payload is decoded again by the sensor, deeper in
    its own stack, and json raises RecursionError (not a ValueError) on nesting it cannot follow."""
    try:
        value = json.loads(body)
        level = [value]
        for _ in range(MAX_DEPTH):  # level by level, without recursing itself
            level = [child for node in level if isinstance(node, (dict, list))
                     for child in (node.values() if isinstance(node, dict) else node)]
        too_deep = any(isinstance(node, (dict, list)) for node in level)
    except RecursionError:
        too_deep = True
    if too_deep:
        raise PayloadError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


def _text(value: Any, where: str) -> str:
    """An id as the inbox stores it. One holding a NUL (PostgreSQL text cannot hold it) or an unpaired surrogate (a
    JSON escape like \\ud800 that no UTF-8 database takes) is refused; the payload keeps both, escaped as JSON writes
    them."""
    if value is None or value == "" or isinstance(value, (dict, list, bool)):
        raise PayloadError(f"{where} is missing or not an id")
    text = str(value)
    if "\x00" in text:
        raise PayloadError(f"{where} holds a NUL character")
    if not text.isascii() and any("\ud800" <= char <= "\udfff" for char in text):
        raise PayloadError(f"{where} holds an unpaired surrogate")
    return text


def _hubspot_events(body: Any) -> list[InboxEvent]:
    """HubSpot posts an array of events; `contact.propertyChange` → object type `contact`. An `associationChange`
    names its record `fromObjectId` (it has no `objectId`)."""
    if not isinstance(body, list) or not body:
        raise PayloadError("expected a non-empty JSON array of HubSpot events")
    events = []
    for index, event in enumerate(body):
        if not isinstance(event, dict):
            raise PayloadError(f"event [{index}] is not an object")
        subscription = _text(event.get("subscriptionType"), f"event [{index}].subscriptionType")
        id_key = "fromObjectId" if subscription.endswith(ASSOCIATION_CHANGE) else "objectId"
        events.append(InboxEvent(_text(event.get("eventId"), f"event [{index}].eventId"),
                                 subscription.partition(".")[0],
                                 _text(event.get(id_key), f"event [{index}].{id_key}"), event))
    return events


def _stripe_events(body: Any) -> list[InboxEvent]:
    """A Stripe event: `data.object` is the changed object (`object` names its type)."""
    if not isinstance(body, dict) or body.get("object") != "event":
        raise PayloadError("expected a Stripe event object ({\"object\": \"event\", ...})")
    data = body.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise PayloadError("data.object is missing")
    return [InboxEvent(_text(body.get("id"), "id"), _text(obj.get("object"), "data.object.object"),
                       _text(obj.get("id"), "data.object.id"), body)]


def _zendesk_events(body: Any) -> list[InboxEvent]:
    """A Zendesk event webhook: `subject` is `zen:<object type>:<id>`, `detail.id` the record id."""
    if not isinstance(body, dict):
        raise PayloadError("expected a Zendesk event object ({\"type\": \"zen:event-type:...\", ...})")
    parts = str(body.get("subject") or "").split(":")
    object_type, object_id = (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "zen" else ("", "")
    detail = body.get("detail") if isinstance(body.get("detail"), dict) else {}
    if not object_type:
        object_type = str(body.get("type") or "").removeprefix("zen:event-type:").partition(".")[0]
    return [InboxEvent(_text(body.get("id"), "id"), _text(object_type, "subject"),
                       _text(object_id or detail.get("id"), "subject / detail.id"), body)]


# --- what an event says changed, as a fragment of the record the tool's API returns (None: it carries no values) ---

def _hubspot_changed(payload: Any) -> dict | None:
    """A `propertyChange` carries the one property's new value (empty when cleared); an `associationChange` the
    associated record's id under ``associations.<its stream>``, as the connector reads it; creations, deletions and
    restores carry none."""
    subscription = str(payload.get("subscriptionType", ""))
    if subscription.endswith(ASSOCIATION_CHANGE):
        to_type = str(payload.get("associationType") or "").partition("_TO_")[2].lower()
        stream = HUBSPOT_STREAMS.get(to_type)
        if stream is None or payload.get("toObjectId") in (None, ""):
            return None
        return {ASSOCIATIONS: {stream: str(payload["toObjectId"])}}
    if not subscription.endswith(".propertyChange") or "propertyName" not in payload:
        return None
    return {"properties": {str(payload["propertyName"]): payload.get("propertyValue")}}


def _hubspot_removes(payload: Any) -> bool:
    """An `associationChange` with `associationRemoved`: its record is no longer associated with that one."""
    return str(payload.get("subscriptionType", "")).endswith(ASSOCIATION_CHANGE) and \
        payload.get("associationRemoved") is True


def _sets(payload: Any) -> bool:
    """Stripe's and Zendesk's events carry values set, never values taken away."""
    return False


def _stripe_changed(payload: Any) -> dict | None:
    """The whole object as it is now; `previous_attributes`, when sent, names the fields that changed."""
    obj = payload["data"]["object"]
    previous = payload["data"].get("previous_attributes")
    return {key: obj.get(key) for key in previous} if isinstance(previous, dict) else obj


def _zendesk_changed(payload: Any) -> dict | None:
    """A name change carries the new name; an identity change the new email or phone (it is the email when it
    equals `detail.email`, the user's current one); a new organization membership the user's organization as
    `detail.organization_id` has it now. Other events name no field with its value."""
    kind = str(payload.get("type", "")).removeprefix("zen:event-type:")
    event = payload.get("event") if isinstance(payload.get("event"), dict) else {}
    if kind == "user.organization_membership_created" and (payload.get("detail") or {}).get("organization_id"):
        return {"organization_id": payload["detail"]["organization_id"]}
    if "current" not in event or isinstance(event["current"], (dict, list)):
        return None
    current, detail = event["current"], payload.get("detail") or {}
    if kind == "user.name_changed":
        return {"name": current}
    if kind == "user.identity_changed":
        return {"email" if current == detail.get("email") else "phone": current}
    return None


@dataclass(frozen=True)
class WebhookScheme:
    """How one vendor signs its webhooks, shapes their bodies, names the API streams of their objects and carries
    the changed values (so that the echo of our own write-back can be told from a real edit)."""

    tool: str
    headers: tuple[str, ...]  # the signature headers, checked present before the body is read
    sign: Callable[[str, str, str, bytes, float], dict[str, str]]
    verify: Callable[[str, str, str, Mapping[str, str], bytes, float], None]
    events: Callable[[Any], list[InboxEvent]]
    streams: Mapping[str, str]  # an event's object type -> the API stream that lists such objects
    changed: Callable[[Any], dict | None]
    # whether the values `changed` carries were taken away (an association removed) rather than set
    removes: Callable[[Any], bool]


SCHEMES = {scheme.tool: scheme for scheme in (
    WebhookScheme("hubspot", ("X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"),
                  _sign_hubspot, _verify_hubspot, _hubspot_events,
                  HUBSPOT_STREAMS, _hubspot_changed, _hubspot_removes),
    WebhookScheme("stripe", ("Stripe-Signature",), _sign_stripe, _verify_stripe, _stripe_events,
                  {"customer": "customers", "invoice": "invoices"}, _stripe_changed, _sets),
    WebhookScheme("zendesk", ("X-Zendesk-Webhook-Signature", "X-Zendesk-Webhook-Signature-Timestamp"),
                  _sign_zendesk, _verify_zendesk, _zendesk_events,
                  {"user": "users", "ticket": "tickets"}, _zendesk_changed, _sets),
)}


if set(SCHEMES) != set(SECRET_ENV):  # a kind that signs webhooks has its scheme here, and only such a kind
    raise ImportError(f"webhook schemes {sorted(SCHEMES)} differ from the kinds that sign webhooks "
                      f"{sorted(SECRET_ENV)} (connectors/kinds.py)")


def signed_headers(tool: str, secret: str, url: str, body: bytes, now: float | None = None,
                   method: str = "POST") -> dict[str, str]:
    """The headers `tool` would send with `body` to `url` at `now` (epoch seconds), JSON content type included."""
    scheme = SCHEMES.get(tool)
    if scheme is None:
        raise ValueError(f"no webhook scheme for {tool!r}; expected one of {sorted(SCHEMES)}")
    now = time.time() if now is None else now
    return {"Content-Type": "application/json", **scheme.sign(secret, method, url, body, now)}


def secrets_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every tool's webhook secret from its environment variable; names each one that is unset."""
    environ = os.environ if environ is None else environ
    missing = [var for var in SECRET_ENV.values() if not environ.get(var)]
    if missing:
        raise ValueError(f"webhook secrets missing: set {', '.join(missing)}")
    return {tool: environ[var] for tool, var in SECRET_ENV.items()}


# --- the inbox ---

def _make_engine(url: str) -> Engine:
    from sync_pipelines.warehouse import make_engine  # here, so the sandbox's sender does not load pandas

    return make_engine(url)


@contextmanager
def _engine(engine_or_url: Engine | str) -> Iterator[Engine]:
    """The engine given, or one made (and disposed of afterwards) for a URL; the inbox exists when it yields."""
    owned = not isinstance(engine_or_url, Engine)
    engine = _make_engine(engine_or_url) if owned else engine_or_url
    try:
        _create_inbox(engine)
        yield engine
    finally:
        if owned:
            engine.dispose()


def _create_inbox(engine: Engine) -> None:
    """The inbox table, with the `skipped` column added to one an earlier version created."""
    inbox.create(engine, checkfirst=True)
    if "skipped" not in {column["name"] for column in sa.inspect(engine).get_columns(INBOX_TABLE)}:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {INBOX_TABLE} ADD COLUMN skipped TEXT")


def _insert_ignoring_duplicates(engine: Engine, rows: list[dict[str, Any]]) -> int:
    """Insert, skipping (tool, event_id) already there: redeliveries are idempotent. Returns rows inserted."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"the webhook inbox supports sqlite and postgresql warehouses, not {dialect}")
    statement = (insert(inbox).values(rows).on_conflict_do_nothing(index_elements=["tool", "event_id"])
                 .returning(inbox.c.id))
    with engine.begin() as conn:
        return len(conn.execute(statement).all())


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def read_inbox(engine_or_url: Engine | str, after_id: int = 0, limit: int = 1000, *,
               include_processed: bool = False) -> list[dict[str, Any]]:
    """Inbox rows with id > `after_id`, oldest first, payload decoded; unprocessed ones unless asked otherwise."""
    query = sa.select(inbox).where(inbox.c.id > after_id).order_by(inbox.c.id).limit(limit)
    if not include_processed:
        query = query.where(inbox.c.processed_at.is_(None))
    with _engine(engine_or_url) as engine, engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        row.update(payload=json.loads(row["payload"]), received_at=_utc(row["received_at"]),
                   processed_at=_utc(row["processed_at"]))
    return rows


def mark_processed(engine_or_url: Engine | str, ids: list[int] | tuple[int, ...] | set[int],
                   skipped: str | None = None) -> int:
    """Stamp `processed_at` on these inbox rows (those not stamped yet), with why they start no run when they do
    not (`skipped`); returns how many were stamped."""
    ids = sorted({int(i) for i in ids})
    now = datetime.now(timezone.utc)
    stamped = 0
    with _engine(engine_or_url) as engine, engine.begin() as conn:
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            stamped += conn.execute(inbox.update().where(inbox.c.id.in_(chunk), inbox.c.processed_at.is_(None))
                                    .values(processed_at=now, skipped=skipped)).rowcount
    return stamped


# --- the receiver ---

def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


async def _limited_body(request: Request) -> bytes:
    """The body, refused by its Content-Length before any of it is read, or as soon as a streamed one passes
    MAX_BODY_BYTES, so an oversized post never sits in memory."""
    length = request.headers.get("content-length", "0")
    if not _is_short_number(length) or int(length) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"Content-Length is over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"body is over {MAX_BODY_BYTES} bytes")
    return bytes(body)


def build_webhook_app(warehouse_url: str, secrets: dict[str, str],
                      clock: Callable[[], float] = time.time) -> Starlette:
    """`POST /webhooks/{hubspot,stripe,zendesk}` verified and landed in the inbox; `GET /health`.

    The inbox table is created now, so a bad warehouse URL fails at start rather than on the first webhook.
    """
    unknown = set(secrets) - set(SCHEMES)
    if unknown:
        raise ValueError(f"webhook secrets given for unknown tool(s) {sorted(unknown)}; expected {sorted(SCHEMES)}")
    empty = [tool for tool, secret in secrets.items() if not isinstance(secret, str) or not secret]
    if empty:
        raise ValueError(f"webhook secret for {', '.join(sorted(empty))} is empty")
    engine = _make_engine(warehouse_url)
    _create_inbox(engine)

    def receiver(scheme: WebhookScheme):
        async def endpoint(request: Request) -> JSONResponse:
            secret = secrets.get(scheme.tool)
            if secret is None:
                return _error(404, f"no {scheme.tool} webhook secret configured (set {SECRET_ENV[scheme.tool]})")
            try:
                for header in scheme.headers:  # before the body is read, so an unsigned post costs nothing
                    _required(request.headers, header)
                body = await _limited_body(request)
                scheme.verify(secret, request.method, str(request.url), request.headers, body, clock())
            except SignatureError as exc:
                log.info("refused %s webhook: %s", scheme.tool, exc)
                return _error(401, f"{scheme.tool} webhook refused: {exc}")
            except BodyTooLarge as exc:
                log.info("refused %s webhook: %s", scheme.tool, exc)
                return _error(413, f"{scheme.tool} webhook refused: {exc}")
            try:
                events = scheme.events(_parsed(body))
            except ValueError as exc:  # PayloadError, or not JSON at all
                return _error(400, f"{scheme.tool} webhook body: {exc}")
            received_at = datetime.fromtimestamp(clock(), timezone.utc)
            rows = [{"tool": scheme.tool, "event_id": e.event_id, "object_type": e.object_type,
                     "object_id": e.object_id, "received_at": received_at,
                     "payload": json.dumps(e.payload, separators=(",", ":"))} for e in events]
            stored = await run_in_threadpool(_insert_ignoring_duplicates, engine, rows)
            return JSONResponse({"received": len(rows), "stored": stored})
        return endpoint

    routes = [Route("/health", lambda request: JSONResponse({"ok": True}), methods=["GET"])]
    routes += [Route(f"/webhooks/{tool}", receiver(scheme), methods=["POST"]) for tool, scheme in SCHEMES.items()]
    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.engine = engine
    return app


def serve_webhooks(port: int, warehouse_url: str, secrets: dict[str, str], host: str = "127.0.0.1") -> None:
    """Receive webhooks until interrupted."""
    import uvicorn

    uvicorn.run(build_webhook_app(warehouse_url, secrets), host=host, port=port, log_level="warning")
