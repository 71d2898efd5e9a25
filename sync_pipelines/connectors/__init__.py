"""Connectors: one way to read from and write to every tool of a stack.

Public contract (stable; the Dagster layer and the CLI rely on it)::

    connector = connect(kind, base_url, credentials, **options)
    for record in connector.read(stream, since=None): ...        # dicts, every page followed
    results = connector.write(stream, records, mode="upsert", key=None)
    connector.stats                                              # Stats; stats["requests"], stats.as_dict()
    connector.close()                                            # or use it as a context manager

* ``kind``: salesforce, hubspot, zendesk, asana, stripe, slack, csv, sql, and rest (any REST API, described by the
  ``rest`` option: ``connectors.rest.RestSpec``).
* ``base_url``: the vendor root the stack gives (``https://acme.my.salesforce.com`` or the sandbox's
  ``http://127.0.0.1:8765/salesforce``); the connector appends the vendor's own paths, so the same code talks to
  the real service and to the sandbox. For csv it is a folder, for sql an SQLAlchemy URL.
* ``credentials``: a dict (salesforce, hubspot, asana ``access_token``; zendesk ``email`` and ``api_token``;
  stripe ``api_key``; slack ``webhook_url``) or a plain string for the single-secret kinds; None for csv and sql.
* ``options``: ``name`` (the tool's name in the stack, used in messages), ``credential_env`` (credential key ->
  environment variable, named in auth errors), ``rate_limit`` (``{"requests": n, "per_seconds": s}``, kept
  client-side), ``timeout`` (seconds per call), ``page_size``, ``max_retries``, ``fields`` ({stream: [field, ...]}
  to read instead of discovering every field); asana ``project`` pins one project gid; csv and sql ``cursor`` (a
  column, or {stream: column}) filters rows on ``since``. Tests may pass ``sleep``, ``clock``, ``session`` and
  ``backoff_base``.
* ``read(stream, since)``: ``since`` is an aware datetime or ISO string (a bare date means midnight UTC); each tool
  turns it into its own filter and returns records changed at or after it, deleted ones included where the API
  tells (Salesforce ``IsDeleted``, HubSpot ``archived``, Zendesk ``active``/``status``, Stripe ``deleted``).
  Stripe records get an ``updated`` key (epoch seconds) since Stripe objects have no modification time.
* ``write(stream, records, mode, key)`` returns one ``{"ok", "id", "created", "error"}`` per input record, in
  order. ``key`` is the matching field (salesforce external id, default ``External_Id__c``; hubspot
  ``idProperty``, default ``email``; zendesk default ``email``; csv and sql a column). Stripe writes send an
  ``Idempotency-Key``: the record's ``idempotency_key`` (so a create re-run after a crash is not made twice), else
  one per call, so that retrying it is safe.
* Errors are ``ConnectorError`` subclasses: ``AuthError`` (credentials refused; raised at once, names the
  environment variable), ``RateLimitError``, ``ApiError``, ``ResponseError``. No message, log line or stat ever
  holds a secret.
"""

from __future__ import annotations

from typing import Any

from sync_pipelines.connectors.base import Connector, Options
from sync_pipelines.connectors.errors import ApiError, AuthError, ConnectorError, RateLimitError, ResponseError
from sync_pipelines.connectors.http import Stats, redact
from sync_pipelines.connectors.kinds import KINDS as TOOL_KINDS

CONNECTORS: dict[str, type[Connector]] = {name: kind.connector for name, kind in TOOL_KINDS.items()}
KINDS = tuple(TOOL_KINDS)

__all__ = ["connect", "Connector", "Stats", "redact", "KINDS", "TOOL_KINDS", "ConnectorError", "AuthError",
           "RateLimitError", "ApiError", "ResponseError"]


def connect(kind: str, base_url: str, credentials: Any = None, **options: Any) -> Connector:
    """A ready connector for one tool; bad options or missing credentials fail here, before any request."""
    connector_class = CONNECTORS.get(kind)
    if connector_class is None:
        raise ConnectorError(f"{options.get('name', kind)}: unknown connector kind {kind!r}; known: {list(KINDS)}")
    return connector_class(base_url, credentials, Options.parse(kind, options, connector_class.extra_options))
