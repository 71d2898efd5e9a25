"""Webhooks the sandbox sends when HubSpot contacts or companies, Zendesk users or Stripe customers change, each in
the vendor's shape and signed with the vendor's scheme (the same helpers the receiver verifies with).

Payloads are rendered under the sandbox lock when the write happens; a background thread signs and posts them in
order, so a write never waits on the receiver, and a failed delivery is logged and recorded, never raised.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import requests

from sync_pipelines.webhooks import signed_headers

from .common import iso_s
from .table import Table

if TYPE_CHECKING:
    from .app import SandboxState

log = logging.getLogger(__name__)

DEFAULT_SECRETS = {"hubspot": "sandbox-hubspot-webhook-secret", "stripe": "sandbox-stripe-webhook-secret",
                   "zendesk": "sandbox-zendesk-webhook-secret"}
STREAMS = {("hubspot", "contacts"), ("hubspot", "companies"), ("zendesk", "users"), ("stripe", "customers")}
HUBSPOT_PORTAL_ID = 62515
HUBSPOT_APP_ID = 1
# A HubSpot stream -> the object type its subscriptions name (`company.propertyChange`)
HUBSPOT_OBJECTS = {"contacts": "contact", "companies": "company"}
HUBSPOT_SUBSCRIPTIONS = {"contact.creation": 1, "contact.deletion": 2, "contact.propertyChange": 3,
                         "contact.restore": 4, "contact.associationChange": 5, "company.creation": 6,
                         "company.deletion": 7, "company.propertyChange": 8, "company.restore": 9}
ZENDESK_ACCOUNT_ID = 1
ZENDESK_FIELD_EVENTS = {"name": "user.name_changed", "email": "user.identity_changed",
                        "phone": "user.identity_changed", "external_id": "user.external_id_changed",
                        "organization_id": "user.organization_membership_created"}
SEND_TIMEOUT_S = 5
_STOP = None


@dataclass(frozen=True)
class AssociationChange:
    """An association added or removed (HubSpot's ``associationType`` such as CONTACT_TO_COMPANY): no property
    changes, so HubSpot announces it by its own event, never a ``propertyChange``."""

    association_type: str
    to_id: int
    removed: bool


class WebhookSender:
    """Queues one signed webhook per record write and posts them from one background thread."""

    def __init__(self, state: "SandboxState", url: str, secrets: dict[str, str] | None = None) -> None:
        unknown = set(secrets or {}) - set(DEFAULT_SECRETS)
        if unknown:
            raise ValueError(f"sandbox webhook secrets: unknown tool(s) {sorted(unknown)}; "
                             f"expected {sorted(DEFAULT_SECRETS)}")
        self.state = state
        self.url = url.rstrip("/")
        self.secrets = {**DEFAULT_SECRETS, **(secrets or {})}
        self.sent: list[dict[str, Any]] = []
        self._sent_lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def on_write(self, table: Table, row: int, kind: str, changes: dict[str, Any],
                 association: AssociationChange | None = None) -> None:
        """Called by `SandboxState.write` (under the lock): render the vendor's payload now, send it later."""
        if (table.tool, table.name) not in STREAMS:
            return
        if association is not None:
            payloads = self._hubspot_association(table, row, association)
        else:
            payloads = {"hubspot": self._hubspot, "zendesk": self._zendesk, "stripe": self._stripe}[table.tool](
                table, row, kind, changes)
        for payload in payloads:
            self._queue.put((table.tool, payload))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="sandbox-webhooks")
            self._thread.start()

    def sent_log(self) -> list[dict[str, Any]]:
        with self._sent_lock:
            return list(self.sent)

    def close(self, timeout: float = 10) -> None:
        """Deliver what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            self._deliver(*item)

    def _deliver(self, tool: str, payload: Any) -> None:
        url = f"{self.url}/webhooks/{tool}"
        body = json.dumps(payload, separators=(",", ":")).encode()
        entry: dict[str, Any] = {"tool": tool, "url": url, "event_ids": _event_ids(tool, payload),
                                 "sent_at": datetime.now(timezone.utc).isoformat(), "status": None, "error": None}
        try:
            response = requests.post(url, data=body, headers=signed_headers(tool, self.secrets[tool], url, body),
                                     timeout=SEND_TIMEOUT_S)
            entry["status"] = response.status_code
            if response.status_code >= 300:
                entry["error"] = response.text[:500]
                log.warning("sandbox %s webhook to %s answered %s", tool, url, response.status_code)
        except requests.RequestException as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("sandbox %s webhook to %s failed: %s", tool, url, entry["error"])
        with self._sent_lock:
            self.sent.append(entry)

    @staticmethod
    def _hubspot_common(table: Table, row: int) -> dict[str, Any]:
        return {"portalId": HUBSPOT_PORTAL_ID, "appId": HUBSPOT_APP_ID, "occurredAt": int(table.modified[row]),
                "attemptNumber": 0, "changeSource": "CRM"}

    def _hubspot_association(self, table: Table, row: int, change: AssociationChange) -> list[Any]:
        """A ``contact.associationChange`` event: it names both records (``fromObjectId``, ``toObjectId``), not an
        ``objectId``, and whether the association was removed."""
        subscription = "contact.associationChange"
        return [[{"eventId": _unique_number(), "subscriptionId": HUBSPOT_SUBSCRIPTIONS[subscription],
                  "subscriptionType": subscription, **self._hubspot_common(table, row),
                  "associationType": change.association_type, "fromObjectId": int(table.id(row)),
                  "toObjectId": change.to_id, "associationRemoved": change.removed, "isPrimaryAssociation": False}]]

    def _hubspot(self, table: Table, row: int, kind: str, changes: dict[str, Any]) -> list[Any]:
        """One request holding an array of events: one per changed property on an update, as HubSpot sends."""
        common = {**self._hubspot_common(table, row), "objectId": int(table.id(row))}
        obj = HUBSPOT_OBJECTS[table.name]
        if kind == "updated" and changes:
            specs = [(f"{obj}.propertyChange", {"propertyName": name, "propertyValue": "" if value is None
                                                else str(value)}) for name, value in changes.items()]
        else:
            event = {"created": "creation", "deleted": "deletion"}.get(kind, "restore")
            specs = [(f"{obj}.{event}", {})]
        return [[{"eventId": _unique_number(), "subscriptionId": HUBSPOT_SUBSCRIPTIONS[subscription],
                  "subscriptionType": subscription, **common, **extra} for subscription, extra in specs]]

    def _zendesk(self, table: Table, row: int, kind: str, changes: dict[str, Any]) -> list[Any]:
        """Zendesk event webhooks: one event per kind of change, `detail` holding the user's current fields."""
        fields = table.fields(row)
        user_id = str(table.id(row))
        detail = {"created_at": iso_s(int(table.created[row])), "email": fields.get("email"),
                  "external_id": fields.get("external_id") or "", "default_group_id": "0", "id": user_id,
                  "organization_id": str(fields.get("organization_id") or 0), "role": "end-user",
                  "updated_at": iso_s(int(table.modified[row]))}
        if kind == "updated" and changes:
            events = {ZENDESK_FIELD_EVENTS.get(name, "user.details_changed"): {"current": value}
                      for name, value in changes.items()}
        elif kind == "updated":
            events = {"user.active_changed": {"current": True, "previous": False}}
        else:
            events = {f"user.{kind}": {}}
        return [{"type": f"zen:event-type:{event_type}", "account_id": ZENDESK_ACCOUNT_ID,
                 "id": str(uuid.uuid4()), "time": iso_s(int(table.modified[row])),
                 "zendesk_event_version": "2022-06-20", "subject": f"zen:user:{user_id}", "detail": detail,
                 "event": event} for event_type, event in events.items()]

    def _stripe(self, table: Table, row: int, kind: str, changes: dict[str, Any]) -> list[Any]:
        """The event the Stripe emulation just logged for this write, so `/v1/events` shows the same id."""
        stripe = self.state.vendors["stripe"]
        event = stripe.event(len(stripe.events.created) - 1)
        return [{**event, "pending_webhooks": 1}]


def _unique_number() -> int:
    """A HubSpot-like numeric event id, unique across sandbox restarts so the receiver never drops a new event."""
    return uuid.uuid4().int >> 68


def _event_ids(tool: str, payload: Any) -> list[str]:
    if tool == "hubspot":
        return [str(event["eventId"]) for event in payload]
    return [str(payload["id"])]
