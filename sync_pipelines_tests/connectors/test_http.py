"""The HTTP engine against a scripted local server: retries, backoff, auth, throttling, redaction, pagination."""

from __future__ import annotations

import json
import logging
import random
import traceback
from datetime import datetime, timezone

import pytest

from sync_pipelines.connectors import ApiError, AuthError, ConnectorError, ResponseError, connect, redact
from sync_pipelines.connectors.http import (
    Auth, CursorPaginator, HttpClient, PageRequest, RateLimiter, RetryPolicy, parse_json, parse_retry_after,
)
from sync_pipelines.connectors.base import Connector, Options
from sync_pipelines.core.normalize import map_records
from sync_pipelines.stack import load_stack
from sync_pipelines_tests.connectors.conftest import Reply

TOKEN = "tok-SECRET-1234567890"


def client(fake_api, sleeps, **overrides) -> HttpClient:
    settings = dict(tool="demo", base_url=fake_api.url + "/demo", auth=Auth.bearer(TOKEN),
                    credential_hint="the environment variable DEMO_TOKEN", sleep=sleeps,
                    retry=RetryPolicy(max_retries=4, backoff_base=0.5, backoff_max=8))
    settings.update(overrides)
    return HttpClient(**settings)


def test_429_waits_for_retry_after_then_succeeds(fake_api, sleeps):
    replies = iter([Reply(429, {"message": "slow down"}, {"Retry-After": "7"}), Reply(200, {"ok": True})])
    fake_api.script = lambda seen: next(replies)
    http = client(fake_api, sleeps)
    assert http.request("GET", "/things") == {"ok": True}
    assert sleeps == [7.0]
    assert (http.stats.requests, http.stats.retries, http.stats.throttled) == (2, 1, 1)


def test_retry_after_accepts_an_http_date():
    now = datetime(2026, 9, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Tue, 01 Sep 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after("soon", now) is None


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-5", "Infinity"])
def test_retry_after_that_is_no_wait_is_ignored_and_the_backoff_applies(fake_api, sleeps, value):
    assert parse_retry_after(value) is None
    replies = iter([Reply(429, {}, {"Retry-After": value})] * 3 + [Reply(200, {"ok": True})])
    fake_api.script = lambda seen: next(replies)
    http = client(fake_api, sleeps, retry=RetryPolicy(max_retries=3, backoff_base=1, backoff_max=8))
    assert http.request("GET", "/x") == {"ok": True}
    assert len(sleeps) == 3 and 0.5 <= sleeps[0] <= 1 and 1 <= sleeps[1] <= 2 and 2 <= sleeps[2] <= 4


def test_retry_after_zero_and_past_dates_still_mean_now():
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("Tue, 01 Sep 2026 11:00:00 GMT", datetime(2026, 9, 1, 12, tzinfo=timezone.utc)) == 0.0


def test_5xx_backs_off_exponentially_with_jitter(fake_api, sleeps):
    replies = iter([Reply(503, "busy")] * 3 + [Reply(200, {"ok": 1})])
    fake_api.script = lambda seen: next(replies)
    http = client(fake_api, sleeps)
    assert http.request("GET", "/things") == {"ok": 1}
    assert len(sleeps) == 3
    for attempt, pause in enumerate(sleeps):
        ceiling = 0.5 * 2 ** attempt
        assert ceiling / 2 <= pause <= ceiling


def test_5xx_gives_up_after_max_retries(fake_api, sleeps):
    fake_api.script = lambda seen: Reply(500, {"error": "boom"})
    http = client(fake_api, sleeps, retry=RetryPolicy(max_retries=2))
    with pytest.raises(ApiError) as raised:
        http.request("GET", "/things")
    assert raised.value.status == 500
    assert http.stats.requests == 3 and http.stats.retries == 2


@pytest.mark.parametrize("status, error", [(400, ApiError), (404, ApiError), (401, AuthError), (403, AuthError)])
def test_no_retry_on_client_errors(fake_api, sleeps, status, error):
    fake_api.script = lambda seen: Reply(status, {"error": "nope"})
    http = client(fake_api, sleeps)
    with pytest.raises(error):
        http.request("GET", "/things")
    assert http.stats.requests == 1 and sleeps == []


def test_auth_error_names_the_env_var_and_hides_the_secret(fake_api, sleeps):
    fake_api.script = lambda seen: Reply(401, {"category": "INVALID_AUTHENTICATION",
                                               "message": f"bad token {seen.headers['Authorization']}"})
    hubspot = connect("hubspot", fake_api.url + "/hubspot", TOKEN, name="crm", sleep=sleeps,
                      credential_env={"access_token": "CRM_TOKEN"})
    with pytest.raises(AuthError) as raised:
        list(hubspot.read("contacts"))
    message = str(raised.value)
    assert "CRM_TOKEN" in message and "HTTP 401 INVALID_AUTHENTICATION" in message and message.startswith("crm:")
    assert TOKEN not in message
    assert hubspot.stats.requests == 1


def test_secrets_never_reach_errors_or_logs(fake_api, sleeps, caplog):
    echo = lambda seen: Reply(400, {"message": f"you sent {seen.headers['Authorization']} and {seen.path}"})
    fake_api.script = echo
    http = client(fake_api, sleeps)
    caplog.set_level(logging.DEBUG, logger="sync_pipelines.connectors")
    with pytest.raises(ApiError) as raised:
        http.request("GET", f"/things?api_key={TOKEN}&token=other-secret-value")
    assert TOKEN not in str(raised.value) and "other-secret-value" not in str(raised.value)
    fake_api.script = lambda seen: Reply(503, f"down {TOKEN}")
    with pytest.raises(ApiError):
        http.request("GET", "/things", params={"access_token": "third-secret-value"})
    logged = caplog.text
    assert "retry" in logged and TOKEN not in logged and "third-secret-value" not in logged


def test_redact_masks_values_headers_and_query_params():
    text = redact(f"Authorization: Bearer abcdefgh123 url=https://x/y?api_key=k123456&q=1 body {TOKEN}", [TOKEN])
    assert "abcdefgh123" not in text and "k123456" not in text and TOKEN not in text
    assert "q=1" in text


def test_malformed_json_page_is_retried(fake_api, sleeps):
    pages = {None: Reply(200, {"items": [{"id": 1}, {"id": 2}], "next": "p2"}),
             "p2": Reply(200, {"items": [{"id": 3}], "next": None})}
    broken = {"p2": 1}

    def script(seen):
        cursor = seen.query.get("cursor", [None])[0]
        if broken.get(cursor):
            broken[cursor] -= 1
            return Reply(200, b'{"items": [{"id": 3}')
        return pages[cursor]

    fake_api.script = script
    http = client(fake_api, sleeps)
    ids = [r["id"] for r in http.paginate(PageRequest("GET", "/items"), records_path="items",
                                          paginator=CursorPaginator("next", "cursor"))]
    assert ids == [1, 2, 3]
    assert (http.stats.pages, http.stats.retries, http.stats.errors) == (2, 1, 1)


def test_persistently_malformed_json_raises_response_error(fake_api, sleeps):
    fake_api.script = lambda seen: Reply(200, b"<html>oops</html>")
    http = client(fake_api, sleeps)
    with pytest.raises(ResponseError):
        http.request("GET", "/items")
    assert http.stats.requests == 3  # the first try and two retries


def test_a_malformed_answer_to_a_call_unsafe_to_repeat_is_not_sent_again(fake_api, sleeps):
    """A 2xx means the API did the work: sending a create again on a truncated body would make a twin."""
    fake_api.script = lambda seen: Reply(201, b'{"data": {"gid": "12')
    http = client(fake_api, sleeps)
    with pytest.raises(ResponseError, match="may have taken effect"):
        http.request("POST", "/tasks", json={"data": {"name": "Onboard"}}, idempotent=False)
    assert http.stats.requests == 1


def test_a_create_refused_a_connection_is_sent_again_but_not_one_cut_off_after_connecting(fake_api, sleeps):
    """No connection means the API never saw the create: retrying it is safe, unlike a reply lost on the way."""
    refused = HttpClient(tool="demo", base_url="http://127.0.0.1:9", auth=Auth.none(), credential_hint="x",
                         sleep=sleeps, retry=RetryPolicy(max_retries=2, backoff_base=0.01), timeout=2)
    with pytest.raises(ConnectorError, match="ConnectionError"):
        refused.request("POST", "/tasks", json={"data": {"name": "Onboard"}}, idempotent=False)
    assert refused.stats.requests == 3  # the first try and two retries

    fake_api.script = lambda seen: Reply(500, {"message": "boom"})
    http = client(fake_api, sleeps)
    with pytest.raises(ConnectorError):
        http.request("POST", "/tasks", json={"data": {"name": "Onboard"}}, idempotent=False)
    assert http.stats.requests == 1


def test_a_target_that_cannot_find_its_creates_refuses_instead_of_guessing():
    """Reconciling a create a crash interrupted needs the target to look it up; one that cannot must not re-send."""
    connector = Connector(Options.parse("demo", {"name": "demo"}, frozenset()))
    with pytest.raises(ConnectorError, match="cannot tell whether a create .* action_pending"):
        connector.find_created("tasks", "onboarding:hubspot:1")


def test_a_network_failure_does_not_carry_the_url_in_its_exception_chain(sleeps):
    """The driver's exception text holds the whole URL (a secret for webhook-style tools): the failure raised must
    not keep it as its context, which tracebacks and Dagster's error records print."""
    secret_path = "/services/T0SECRET/B0SECRET/" + TOKEN
    http = HttpClient(tool="demo", base_url="http://127.0.0.1:9", auth=Auth.none(secret_path),
                      credential_hint="x", sleep=sleeps, retry=RetryPolicy(max_retries=0), timeout=2)
    with pytest.raises(ConnectorError) as caught:
        http.request("POST", secret_path, json={"text": "hi"})
    printed = "".join(traceback.format_exception(caught.value))
    assert TOKEN not in printed and caught.value.__context__ is None and caught.value.__cause__ is None


def test_every_record_exactly_once_despite_20_percent_5xx(fake_api, sleeps):
    records = [{"id": n} for n in range(500)]
    chance = random.Random(7)

    def script(seen):
        if chance.random() < 0.2:
            return Reply(502, "bad gateway")
        offset = int(seen.query.get("offset", ["0"])[0])
        page = records[offset:offset + 25]
        following = offset + 25 if offset + 25 < len(records) else None
        return Reply(200, {"data": page, "next_page": {"offset": str(following)} if following else None})

    fake_api.script = script
    http = client(fake_api, sleeps, retry=RetryPolicy(max_retries=8))
    ids = [r["id"] for r in http.paginate(PageRequest("GET", "/tasks"), records_path="data",
                                          paginator=CursorPaginator("next_page.offset", "offset"))]
    assert ids == list(range(500))
    assert http.stats.retries > 0 and http.stats.pages == 20


def test_pagination_that_does_not_advance_is_refused(fake_api, sleeps):
    fake_api.script = lambda seen: Reply(200, {"items": [{"id": 1}], "next": "same"})
    http = client(fake_api, sleeps)
    with pytest.raises(ResponseError, match="came back to a page it already read"):
        list(http.paginate(PageRequest("GET", "/items", params={"cursor": "same"}), records_path="items",
                           paginator=CursorPaginator("next", "cursor")))


def test_pagination_cycling_back_to_an_earlier_cursor_is_refused(fake_api, sleeps):
    following = {"-": "A", "A": "B", "B": "A"}
    fake_api.script = lambda seen: Reply(200, {"items": [{"id": 1}],
                                               "next": following[seen.query.get("cursor", ["-"])[0]]})
    http = client(fake_api, sleeps)
    with pytest.raises(ResponseError, match="came back to a page it already read"):
        list(http.paginate(PageRequest("GET", "/items"), records_path="items",
                           paginator=CursorPaginator("next", "cursor")))
    assert len(fake_api.seen) == 3  # -, A, B: then B's next (A) was refused


def test_network_failures_are_retried_then_reported(sleeps):
    http = HttpClient(tool="demo", base_url="http://127.0.0.1:9", auth=Auth.bearer(TOKEN), credential_hint="x",
                      sleep=sleeps, retry=RetryPolicy(max_retries=2), timeout=2)
    with pytest.raises(ConnectorError, match="demo: GET http://127.0.0.1:9/x failed"):
        http.request("GET", "/x")
    assert http.stats.requests == 3 and len(sleeps) == 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_keeps_every_window_within_budget():
    clock = FakeClock()
    limiter = RateLimiter(5, 1.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(23):
        limiter.acquire()
        starts.append(clock.now)
        clock.now += 0.01  # the request itself
    for first in starts:
        assert sum(1 for s in starts if first <= s < first + 1.0) <= 5
    assert starts[-1] >= 4.0  # 23 requests at 5/s cannot finish before the fifth second


def test_client_applies_the_declared_rate_limit(fake_api):
    clock = FakeClock()
    fake_api.script = lambda seen: Reply(200, {"ok": True})
    http = HttpClient(tool="demo", base_url=fake_api.url, auth=Auth.none(), credential_hint="x",
                      rate_limit={"requests": 3, "per_seconds": 10}, clock=clock, sleep=clock.sleep)
    for _ in range(7):
        http.request("GET", "/x")
    assert clock.now == pytest.approx(20.0)
    with pytest.raises(ConnectorError, match="rate_limit"):
        RateLimiter.from_option({"requests": 0, "per_seconds": 1})


def test_endpoint_limits_apply_only_to_their_paths(fake_api):
    clock = FakeClock()
    fake_api.script = lambda seen: Reply(200, {"ok": True})
    http = HttpClient(tool="demo", base_url=fake_api.url, auth=Auth.none(), credential_hint="x",
                      endpoint_limits={"/export/": {"requests": 2, "per_seconds": 60}}, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        http.request("GET", "/other")
    assert clock.now == 0
    for _ in range(3):
        http.request("GET", "/export/users")
    assert clock.now == pytest.approx(60.0)


def test_connectors_of_one_tool_share_its_rate_budget():
    first = RateLimiter.from_option({"requests": 3, "per_seconds": 10}, share_key=("hubspot", "https://x"))
    second = RateLimiter.from_option({"requests": 3, "per_seconds": 10}, share_key=("hubspot", "https://x"))
    other = RateLimiter.from_option({"requests": 3, "per_seconds": 10}, share_key=("zendesk", "https://y"))
    assert first is second and first is not other


def test_redact_keeps_prose_that_only_looks_like_a_scheme():
    assert redact("Basic authentication failed") == "Basic authentication failed"
    assert redact("header Bearer abc123def was refused") == "header Bearer *** was refused"


BIG_IDS = [2**64 + 1, 2**64 + 2, 2**64 + 3, 2**70, 2**70 + 1, 12345678901234567890123, 12345678901234567890124,
           -(2**63) - 1]


def test_integers_past_64_bits_parse_exactly():
    assert parse_json(json.dumps(BIG_IDS).encode()) == BIG_IDS
    assert parse_json(b'{"a": 1.5, "b": NaN, "c": 9223372036854775807}')["c"] == 2**63 - 1
    assert parse_json(b"  \n") is None


def test_ids_past_64_bits_come_through_distinct_and_exact_as_text(fake_api):
    """Zendesk ids are JSON integers; ids past 64 bits became floats in orjson, and 2**64+1 and 2**64+2 one id."""
    users = [{"id": user_id, "email": f"u{n}@example.com", "name": f"User {n}", "active": True,
              "updated_at": "2026-11-01T00:00:00Z"} for n, user_id in enumerate(BIG_IDS)]
    fake_api.script = lambda seen: Reply(200, {"users": users, "end_of_stream": True, "after_cursor": None})
    zendesk = connect("zendesk", fake_api.url, {"email": "sync@example.com", "api_token": TOKEN})
    read = list(zendesk.read("users"))
    assert [user["id"] for user in read] == BIG_IDS
    stack = load_stack()
    stream = stack.tools["zendesk"].streams["users"]
    rows, rejects = map_records(read, tool="zendesk", stream_name="users", stream=stream,
                                entity=stack.entities[stream.entity], extracted_at=datetime.now(timezone.utc))
    assert rejects.empty
    assert sorted(rows["_source_id"]) == sorted(str(user_id) for user_id in BIG_IDS)
