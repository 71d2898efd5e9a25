"""Slack incoming webhook: write-only, and the webhook URL is itself the secret."""

from __future__ import annotations

from typing import Any

from sync_pipelines.connectors.base import ApiConnector, ToolSpec, result
from sync_pipelines.connectors.http import Auth


def webhook_auth(credentials: dict[str, str]) -> Auth:
    """No header; the URL and its last path segment (the token part) are the values to mask."""
    url = credentials["webhook_url"]
    return Auth.none(url, url.rstrip("/").rsplit("/", 1)[-1])


class SlackConnector(ApiConnector):
    kind = "slack"
    streams = ()
    write_streams = ("messages",)
    # Slack answers a wrong webhook with 403 invalid_token, 404 no_service or 410 channel_is_archived.
    spec = ToolSpec(credential_keys=("webhook_url",), auth=webhook_auth, auth_statuses=(401, 403, 404, 410))

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        return [self._write_batch([record], self._post)[0] for record in records]

    def _post(self, batch: list[dict]) -> list[dict[str, Any]]:
        """A message is posted once: a failed post is retried only when Slack surely dropped it (429). An incoming
        webhook takes no idempotency key, and keeps no message to find: an action's key is not sent, and a post a
        crash left unrecorded is refused by `find_created`, never sent again."""
        message = {k: v for k, v in batch[0].items() if k != "idempotency_key"}
        self.http.request("POST", self.credentials["webhook_url"], json=message, idempotent=False, expect_json=False)
        return [result(True, None, True)]
