"""The registry of tool kinds: one descriptor per kind, from which the stack's allowed kinds, the connector table,
the credential keys, the streams each kind reads and writes, the webhook secrets and the connector bench derive.
Adding a kind is one entry here (and its connector module); a tool no module knows is ``rest``, described in the
stack file itself."""

from __future__ import annotations

from dataclasses import dataclass

from sync_pipelines.connectors.asana import AsanaConnector
from sync_pipelines.connectors.base import Connector
from sync_pipelines.connectors.csv_folder import CsvConnector
from sync_pipelines.connectors.hubspot import HubSpotConnector
from sync_pipelines.connectors.rest import RestConnector
from sync_pipelines.connectors.salesforce import SalesforceConnector
from sync_pipelines.connectors.slack import SlackConnector
from sync_pipelines.connectors.sql import SqlConnector
from sync_pipelines.connectors.stripe import StripeConnector
from sync_pipelines.connectors.zendesk import ZendeskConnector


@dataclass(frozen=True)
class ToolKind:
    """What a kind is: its connector (which declares its streams, write streams, write modes and, for an API, its
    credential keys), whether it signs webhooks (the receiver's scheme in ``webhooks.SCHEMES`` is keyed by the
    kind), and whether the sandbox emulates it under its own name."""

    name: str
    connector: type[Connector]
    webhooks: bool = False
    emulated: bool = True  # the sandbox serves it at /<name> (files and tables it writes or takes as they are)

    @property
    def credential_keys(self) -> tuple[str, ...]:
        spec = getattr(self.connector, "spec", None)  # a rest tool's come from its stack file
        return tuple(spec.credential_keys) if spec is not None else ()

    @property
    def streams(self) -> tuple[str, ...] | None:
        """The streams it reads; None: any name (objects, files, tables, or a rest tool's declared ones)."""
        return self.connector.streams

    @property
    def webhook_secret_env(self) -> str | None:
        return f"{self.name.upper()}_WEBHOOK_SECRET" if self.webhooks else None


KINDS: dict[str, ToolKind] = {kind.name: kind for kind in (
    ToolKind("salesforce", SalesforceConnector),
    ToolKind("hubspot", HubSpotConnector, webhooks=True),
    ToolKind("zendesk", ZendeskConnector, webhooks=True),
    ToolKind("asana", AsanaConnector),
    ToolKind("stripe", StripeConnector, webhooks=True),
    ToolKind("slack", SlackConnector),
    ToolKind("csv", CsvConnector, emulated=False),
    ToolKind("sql", SqlConnector, emulated=False),
    ToolKind("rest", RestConnector, emulated=False),
)}
