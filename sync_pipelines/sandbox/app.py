"""The starlette app: one prefix per emulated tool, each route guarded, plus the `/_sandbox` control plane."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from . import truth
from .asana import Asana
from .common import ApiError, Call, json_response, now_ms
from .data import World, build_world
from .erp import write_csv
from .hubspot import HubSpot
from .jira import Jira
from .limits import Faults, RateLimiter, Stats
from .mailchimp import Mailchimp
from .salesforce import Salesforce
from .slack import Slack
from .stripe import Stripe
from .table import Table
from .vendor import Handler, Vendor
from .webhooks import AssociationChange, WebhookSender
from .zendesk import Zendesk

log = logging.getLogger(__name__)
VENDOR_CLASSES: tuple[type[Vendor], ...] = (Salesforce, HubSpot, Zendesk, Asana, Stripe, Slack, Jira, Mailchimp)


class SandboxState:
    """Everything the running sandbox holds; handlers run under `lock` so tests may read it from other threads."""

    def __init__(self, world: World, csv_dir: Path | None, credentials: dict[str, Any] | None,
                 faults: dict[str, Any] | None, rate_limits: bool) -> None:
        self.world = world
        self.csv_dir = csv_dir
        self.lock = threading.RLock()
        self.random = random.Random(world.seed)
        self.faults = Faults({cls.tool: cls.rate_limit for cls in VENDOR_CLASSES}, rate_limits)
        if faults:
            self.faults.update(faults)
        self.limiter = RateLimiter()
        self.stats = Stats()
        self.vendors: dict[str, Vendor] = {cls.tool: cls(self) for cls in VENDOR_CLASSES}
        unknown = set(credentials or {}) - set(self.vendors)
        if unknown:
            raise ValueError(f"sandbox credentials: unknown tool(s) {sorted(unknown)}; expected {sorted(self.vendors)}")
        self.credentials = {tool: (credentials or {}).get(tool, v.default_credential) for tool, v in self.vendors.items()}
        self._truth_cache: tuple[tuple[int, ...], dict[str, Any]] | None = None
        self.email_owners = truth.EmailOwners(world)
        self.webhooks: WebhookSender | None = None
        if csv_dir is not None:
            write_csv(world, csv_dir)

    def truth_people(self) -> dict[str, Any]:
        """Cached until any table changes: it renders one record per person and field at worst."""
        versions = tuple(t.version for t in self.world.tables.values())
        if self._truth_cache is None or self._truth_cache[0] != versions:
            self._truth_cache = (versions, truth.people(self.world))
        return self._truth_cache[1]

    def write(self, table: Table, row: int | None, changes: dict[str, Any], now: int | None = None,
              deleted: bool | None = None, codes: dict[str, int] | None = None,
              association: AssociationChange | None = None) -> int:
        """Create a record (`row` None) or change one, then let truth and the tool follow; returns its row.
        `association` names the association a write with no field changes added or removed, for its webhook.

        Every write path (vendor APIs and `/_sandbox/mutate`) goes through here, so all of them bump the record's
        time, reach ground truth and fire the tool's hooks (Stripe events, the ERP export, webhooks) alike.
        """
        now = now_ms() if now is None else now
        if row is None:
            row = table.append(changes, now, codes)
            kind = "created"
        else:
            if changes or deleted is None:
                table.update(row, changes, now)
            if deleted is not None:
                table.set_deleted(row, deleted, now)
            kind = "deleted" if deleted else "updated"
        self.email_owners.attribute(table, row)
        if table.tool == "legacy_erp":
            if self.csv_dir is not None:
                write_csv(self.world, self.csv_dir)
        else:
            self.vendors[table.tool].on_change(table, row, kind)
        if self.webhooks is not None:
            self.webhooks.on_write(table, row, kind, changes, association)
        return row

    def mutate(self, body: Any) -> dict[str, Any]:
        """Change one record's fields (or `deleted`) as if someone edited it in the tool, bumping its time."""
        if not isinstance(body, dict):
            raise ValueError("mutate expects {tool, stream, id, changes}")
        missing = [k for k in ("tool", "stream", "id", "changes") if k not in body]
        if missing:
            raise ValueError(f"mutate: missing {', '.join(missing)}")
        table = self.world.table(body["tool"], body["stream"])
        if table is None:
            raise ValueError(f"mutate: unknown stream {body['tool']}/{body['stream']}; "
                             f"expected one of {', '.join(self.world.tables)}")
        row = table.row_of(body["id"])
        if row is None:
            raise ValueError(f"mutate: no record {body['id']!r} in {table.key}")
        changes = body["changes"]
        if not isinstance(changes, dict) or not changes:
            raise ValueError("mutate: changes must be a non-empty object of field: value")
        fields = table.fields(row)
        unknown = set(changes) - set(fields) - {"deleted"}
        if unknown:
            raise ValueError(f"mutate: {table.key} has no field(s) {sorted(unknown)}; fields are {sorted(fields)}")
        field_changes = {k: v for k, v in changes.items() if k != "deleted"}
        self.write(table, row, field_changes, deleted=bool(changes["deleted"]) if "deleted" in changes else None)
        return {"id": body["id"], "modified_ms": int(table.modified[row]), "fields": table.fields(row),
                "deleted": bool(table.deleted[row])}


def _guarded(state: SandboxState, vendor: Vendor, handler: Handler, limited: bool):
    """Wrap a vendor handler: stats, latency, auth, rate limit, random errors, then malformed pages."""
    prefix = f"/{vendor.tool}"

    async def endpoint(request: Request) -> Response:
        tool = vendor.tool
        latency = state.faults.get(tool, "latency_ms", 0)
        if latency:
            await asyncio.sleep(latency / 1000)
        body = await request.body()
        with state.lock:
            response = _respond(state, vendor, handler, limited, Call(request, body, prefix, dict(request.path_params)))
            state.stats.record(tool, response.status_code)
        return response

    return endpoint


def _respond(state: SandboxState, vendor: Vendor, handler: Handler, limited: bool, call: Call) -> Response:
    tool = vendor.tool
    if not vendor.authorized(call.request, state.credentials[tool]):
        return vendor.unauthorized()
    verdict = None
    limit = state.faults.rate_limit(tool)
    if limited and limit is not None:
        verdict = state.limiter.hit(tool, limit)
        if not verdict.allowed:
            return vendor.throttled(verdict)
    error_rate = state.faults.get(tool, "error_rate", 0)
    if error_rate and state.random.random() < error_rate:
        status = state.random.choice((500, 502, 503))
        return vendor.error(status, "SERVER_ERROR", "The sandbox injected a server error (fault knob error_rate).")
    try:
        response = handler(call)
    except ApiError as exc:
        response = vendor.error(exc.status, exc.code, exc.message, **exc.extra)
    except Exception:  # a bug in the emulator must still answer in the vendor's shape
        log.exception("sandbox %s handler failed on %s", tool, call.request.url.path)
        response = vendor.error(500, "INTERNAL_ERROR", "The sandbox failed to handle this request.")
    response.headers.update(vendor.limit_headers(verdict))
    malformed = state.faults.get(tool, "malformed_page_rate", 0)
    if (malformed and response.status_code == 200 and call.request.method == "GET"
            and response.media_type == "application/json" and state.random.random() < malformed):
        truncated = response.body[: max(1, len(response.body) // 2)]
        return Response(truncated, 200, headers={k: v for k, v in response.headers.items()
                                                  if k.lower() != "content-length"}, media_type="application/json")
    return response


def _control_routes(state: SandboxState) -> list[Route]:
    def control(fn):
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            try:
                with state.lock:
                    return json_response(fn(request, Call(request, body, "/_sandbox").json() if body else None))
            except (ValueError, ApiError) as exc:
                return json_response({"error": getattr(exc, "message", str(exc))}, 400)
        return endpoint

    def truth_records(request: Request, _: Any) -> Any:
        tool, stream = request.query_params.get("tool"), request.query_params.get("stream")
        table = state.world.table(tool or "", stream or "")
        derived = truth.DERIVED_RECORDS.get(f"{tool}/{stream}")
        if derived is not None:
            return derived(state.world)
        if table is None:
            raise ValueError(f"truth/records needs tool= and stream= of one of "
                             f"{', '.join([*state.world.tables, *truth.DERIVED_RECORDS])}")
        return truth.records(table, state.world)

    def set_faults(_: Request, body: Any) -> Any:
        state.faults.update(body or {})
        return state.faults.as_dict()

    def reset_stats(_: Request, __: Any) -> Any:
        state.stats.reset()
        state.limiter.reset()
        return {"ok": True}

    return [
        Route("/truth", control(lambda r, b: truth.summary(state.world))),
        Route("/truth/records", control(truth_records)),
        Route("/truth/people", control(lambda r, b: state.truth_people())),
        Route("/truth/conflicts", control(lambda r, b: state.world.conflicts)),
        Route("/truth/company_conflicts", control(lambda r, b: state.world.company_conflicts)),
        Route("/faults", control(lambda r, b: state.faults.as_dict()), methods=["GET"]),
        Route("/faults", control(set_faults), methods=["POST"]),
        Route("/stats", control(lambda r, b: state.stats.as_dict())),
        Route("/stats/reset", control(reset_stats), methods=["POST"]),
        Route("/mutate", control(lambda r, b: state.mutate(b)), methods=["POST"]),
        Route("/slack/messages", control(lambda r, b: state.vendors["slack"].messages)),
        Route("/webhooks/sent", control(lambda r, b: state.webhooks.sent_log() if state.webhooks else [])),
    ]


ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _not_found(vendor: Vendor) -> Handler:
    def handler(call: Call) -> Response:
        return vendor.error(404, "NOT_FOUND", f"{call.request.method} {call.request.url.path} is not a "
                            f"{vendor.tool} endpoint the sandbox serves")
    return handler


def build_app(seed: int = 42, scale: float = 1.0, csv_dir: str | Path | None = None,
              credentials: dict[str, Any] | None = None, faults: dict[str, Any] | None = None,
              rate_limits: bool = True, world: World | None = None, webhook_url: str | None = None,
              webhook_secrets: dict[str, str] | None = None) -> Starlette:
    """The sandbox app; `app.state.sandbox` is its SandboxState. Pass `world` to serve pre-built data.

    With `webhook_url`, changes to HubSpot contacts, Zendesk users and Stripe customers are sent, signed, to
    `{webhook_url}/webhooks/{tool}` (secrets per tool default to `sandbox-<tool>-webhook-secret`).
    """
    world = world or build_world(seed, scale)
    state = SandboxState(world, Path(csv_dir) if csv_dir is not None else None, credentials, faults, rate_limits)
    if webhook_url is not None:
        state.webhooks = WebhookSender(state, webhook_url, webhook_secrets)
    elif webhook_secrets:
        raise ValueError("sandbox webhook_secrets given without webhook_url: webhooks need a receiver URL")
    mounts = []
    for vendor in state.vendors.values():
        routes = [Route(path, _guarded(state, vendor, handler, limited), methods=[method])
                  for method, path, handler, limited in vendor.routes()]
        routes.append(Route("/{rest:path}", _guarded(state, vendor, _not_found(vendor), False), methods=ALL_METHODS))
        mounts.append(Mount(f"/{vendor.tool}", routes=routes))
    app = Starlette(routes=[*mounts, Mount("/_sandbox", routes=_control_routes(state))])
    app.state.sandbox = state
    return app
