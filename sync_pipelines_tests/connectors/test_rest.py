"""The declarative `rest` kind against scripted local APIs: each paginator, incremental filters, auth (OAuth2 token
refresh included), writes, and the errors a response that does not match its spec gets. One test describes a
public API nobody here wrote (GitHub's issues: Link-header pages, `since`, its error shape) from its documentation."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from sync_pipelines.connectors import AuthError, ConnectorError, ResponseError, connect
from sync_pipelines.connectors.rest import RestSpec, RestWrite
from sync_pipelines_tests.connectors.conftest import Reply

SINCE = datetime(2026, 11, 30, 8, 15, tzinfo=timezone.utc)


def rest(fake_api, sleeps, spec: dict, credentials=None, **options):
    return connect("rest", fake_api.url + "/api", credentials or {}, name="demo", rest=RestSpec.model_validate(spec),
                   sleep=sleeps, **options)


def people(start: int, count: int) -> list[dict]:
    return [{"id": str(k), "email": f"p{k}@example.com"} for k in range(start, start + count)]


def test_a_public_api_described_from_its_documentation_reads_every_page(fake_api, sleeps):
    """GitHub's "list repository issues": bearer token, `per_page` and `since` (ISO 8601 in UTC, Z), the next page
    in the Link header, errors as {"message", "documentation_url"}."""
    issues = [{"number": k, "title": f"issue {k}", "updated_at": "2026-11-30T09:00:00Z"} for k in range(1, 8)]

    def github(seen):
        if seen.headers.get("Authorization") != "Bearer ghp_secret_token_1":
            return Reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
        page, per_page = int(seen.query.get("page", ["1"])[0]), int(seen.query["per_page"][0])
        chunk = issues[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(issues):
            query = f"per_page={per_page}&since={seen.query['since'][0]}&state=all&page={page + 1}"
            headers["Link"] = f'<{fake_api.url}/api/repos/acme/app/issues?{query}>; rel="next", ' \
                              f'<{fake_api.url}/api/repos/acme/app/issues?page=1>; rel="first"'
        return Reply(200, chunk, headers)

    fake_api.script = github
    spec = {"client": {"auth": {"type": "bearer", "token": "token"}, "error_path": "message", "page_size": 3,
                       "headers": {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}},
            "reads": {"issues": {"endpoint": {"path": "/repos/acme/app/issues",
                                              "params": {"state": "all", "per_page": 3}},
                                 "paginator": {"type": "link_header"},
                                 "incremental": {"param": "since", "format": "iso_z"}}}}
    with rest(fake_api, sleeps, spec, {"token": "ghp_secret_token_1"}) as github_api:
        read = list(github_api.read("issues", since=SINCE))
    assert [issue["number"] for issue in read] == list(range(1, 8))
    assert len(fake_api.seen) == 3 and fake_api.seen[0].query["since"] == ["2026-11-30T08:15:00Z"]
    assert fake_api.seen[0].headers["X-GitHub-Api-Version"] == "2022-11-28"
    with pytest.raises(AuthError) as refused:
        list(rest(fake_api, sleeps, spec, {"token": "ghp_wrong_token_2"}).read("issues"))
    assert "Bad credentials" in str(refused.value) and "ghp_wrong_token_2" not in str(refused.value)
    assert "DEMO_TOKEN" in str(refused.value)  # the environment variable to fix


def test_cursor_pages_stop_at_the_last_page_flag_and_a_query_template_takes_the_time(fake_api, sleeps):
    """Jira's search: `nextPageToken` until `isLast`, the time inside a JQL query."""
    pages = {None: (people(0, 2), "t1", False), "t1": (people(2, 2), "t2", False), "t2": (people(4, 1), None, True)}

    def jira(seen):
        records, token, last = pages[seen.query.get("nextPageToken", [None])[0]]
        return Reply(200, {"issues": records, "isLast": last, **({"nextPageToken": token} if token else {})})

    fake_api.script = jira
    spec = {"client": {"auth": {"type": "basic", "username": "email", "password": "api_token"}},
            "reads": {"issues": {"endpoint": {"path": "/rest/api/3/search/jql",
                                              "params": {"jql": "project = SUP ORDER BY updated ASC"}},
                                 "records_path": "issues",
                                 "paginator": {"type": "cursor", "cursor_path": "nextPageToken",
                                               "param": "nextPageToken", "stop_path": "isLast"},
                                 "incremental": {"param": "jql", "format": "%Y-%m-%d %H:%M",
                                                 "template": 'project = SUP AND updated >= "{since}" ORDER BY '
                                                             'updated ASC'}}}}
    with rest(fake_api, sleeps, spec, {"email": "ops@acme.com", "api_token": "jira-token-XYZ"}) as jira_api:
        assert [r["id"] for r in jira_api.read("issues", since=SINCE)] == ["0", "1", "2", "3", "4"]
    assert fake_api.seen[0].query["jql"] == ['project = SUP AND updated >= "2026-11-30 08:15" ORDER BY updated ASC']
    assert fake_api.seen[0].headers["Authorization"] == "Basic " + base64.b64encode(
        b"ops@acme.com:jira-token-XYZ").decode()


def test_offset_pages_end_at_the_total_and_epoch_times_are_sent_as_numbers(fake_api, sleeps):
    members = people(0, 7)

    def mailchimp(seen):
        offset, count = int(seen.query.get("offset", ["0"])[0]), int(seen.query["count"][0])
        return Reply(200, {"members": members[offset:offset + count], "total_items": len(members)})

    fake_api.script = mailchimp
    spec = {"client": {"auth": {"type": "basic", "username_text": "anystring", "password": "api_key"},
                       "page_size": 3},
            "reads": {"members": {"endpoint": {"path": "/3.0/lists/abc/members"}, "records_path": "members",
                                  "paginator": {"type": "offset", "limit_param": "count",
                                                "total_path": "total_items"},
                                  "incremental": {"param": "since", "format": "epoch_ms"}}}}
    with rest(fake_api, sleeps, spec, {"api_key": "mc-key-us21"}) as api:
        assert [r["id"] for r in api.read("members", since=SINCE)] == [str(k) for k in range(7)]
    assert [s.query.get("offset", ["0"])[0] for s in fake_api.seen] == ["0", "3", "6"]  # no fourth, empty page
    assert fake_api.seen[0].query["since"] == [str(int(SINCE.timestamp() * 1000))]


def test_page_numbers_next_urls_and_an_api_key_in_the_query_of_every_call(fake_api, sleeps):
    def numbered(seen):
        assert seen.query["key"] == ["k-123456"]
        if seen.path.endswith("/numbered"):
            page = int(seen.query.get("page", ["1"])[0])
            return Reply(200, {"data": people(page * 10, 2 if page < 3 else 0), "pages": 5})
        after = int(seen.query.get("after", ["0"])[0])
        following = f"{fake_api.url}/api/linked?after={after + 2}" if after < 4 else None
        return Reply(200, {"items": people(after, 2), "next": following})

    fake_api.script = numbered
    spec = {"client": {"auth": {"type": "api_key", "key": "api_key", "name": "key", "location": "query"}},
            "reads": {"numbered": {"endpoint": {"path": "/numbered"}, "records_path": "data",
                                   "paginator": {"type": "page_number"}},
                      "linked": {"endpoint": {"path": "/linked"}, "records_path": "items",
                                 "paginator": {"type": "next_url", "next_path": "next"}}}}
    with rest(fake_api, sleeps, spec, {"api_key": "k-123456"}) as api:
        assert len(list(api.read("numbered"))) == 4  # pages 1 and 2, then an empty third ends it
        assert [r["id"] for r in api.read("linked")] == [str(k) for k in range(6)]


def test_oauth2_client_credentials_fetch_a_token_and_fetch_it_again_when_it_is_refused(fake_api, sleeps):
    issued, served = [], []

    def api(seen):
        if seen.path.endswith("/token"):
            form = dict(pair.split("=") for pair in seen.body.decode().split("&"))
            assert form["grant_type"] == "client_credentials" and form["client_secret"] == "s3cr3t-client"
            issued.append(f"tok-{len(issued)}-abcdef")
            return Reply(200, {"access_token": issued[-1], "expires_in": 3600, "token_type": "Bearer"})
        token = seen.headers.get("Authorization", "").removeprefix("Bearer ")
        if token != issued[-1] or (token == "tok-0-abcdef" and served):  # token 0 expires after one use
            return Reply(401, {"error": "invalid_token"})
        served.append(token)
        return Reply(200, {"rows": people(0, 2)})

    fake_api.script = api
    spec = {"client": {"auth": {"type": "oauth2_client_credentials", "token_url": fake_api.url + "/oauth/token"},
                       "error_path": "error"},
            "reads": {"rows": {"endpoint": {"path": "/rows"}, "records_path": "rows"}}}
    with rest(fake_api, sleeps, spec, {"client_id": "app", "client_secret": "s3cr3t-client"}) as client:
        assert len(list(client.read("rows"))) == 2  # token 0
        assert len(list(client.read("rows"))) == 2  # token 0 refused (expired): token 1, and the call again
    assert issued == ["tok-0-abcdef", "tok-1-abcdef"] and served == issued


def test_a_response_that_does_not_match_its_spec_fails_naming_the_stream_the_path_and_the_keys(fake_api, sleeps):
    fake_api.script = lambda seen: Reply(200, {"results": [], "paging": {}})
    spec = {"client": {"auth": {"type": "none"}},
            "reads": {"deals": {"endpoint": {"path": "/deals"}, "records_path": "data.items"}}}
    with pytest.raises(ResponseError) as error:
        list(rest(fake_api, sleeps, spec).read("deals"))
    assert "'data.items'" in str(error.value) and "stream deals" in str(error.value)
    assert "its keys: results, paging" in str(error.value)
    # a cursor that never moves: the same page asked twice is refused, never read forever
    fake_api.script = lambda seen: Reply(200, {"data": people(0, 1), "next": "same"})
    stuck = {"client": {"auth": {"type": "none"}},
             "reads": {"deals": {"endpoint": {"path": "/deals"}, "records_path": "data",
                                 "paginator": {"type": "cursor", "cursor_path": "next", "param": "cursor"}}}}
    with pytest.raises(ResponseError, match=r"came back to a page it already read, after GET /deals \(stream deals\)"):
        list(rest(fake_api, sleeps, stuck).read("deals"))
    with pytest.raises(ConnectorError, match="cannot read stream 'contacts'"):
        list(rest(fake_api, sleeps, spec).read("contacts"))


def test_writes_create_update_and_upsert_by_a_hash_of_a_field(fake_api, sleeps):
    calls = []

    def api(seen):
        calls.append((seen.method, seen.path, json.loads(seen.body)))
        return Reply(201 if seen.method == "POST" else 200, {"id": "10042", "key": "SUP-42"})

    fake_api.script = api
    spec = {"client": {"auth": {"type": "none"}},
            "writes": {"issues": {"create": {"method": "POST", "path": "/rest/api/3/issue", "wrap": "fields",
                                             "body": {"fields": {"project": {"key": "SUP"}}}, "id_path": "id"},
                                  "update": {"method": "PUT", "path": "/rest/api/3/issue/{id}", "wrap": "fields"}},
                       "members": {"upsert": {"method": "PUT", "path": "/lists/abc/members/{email_address|lower|md5}",
                                              "body": {"status_if_new": "subscribed"}}}}}
    with rest(fake_api, sleeps, spec) as api_client:
        created = api_client.write("issues", [{"summary": "Urgent: login down", "idempotency_key": "k1"}],
                                   mode="create")
        updated = api_client.write("issues", [{"id": "10042", "summary": "Fixed"}, {"summary": "no id"}],
                                   mode="update", key="id")
        upserted = api_client.write("members", [{"email_address": "Ann@X.com", "merge_fields": {"FNAME": "Ann"}},
                                                {"merge_fields": {"FNAME": "Nobody"}}], mode="upsert", key="email")
    assert created == [{"ok": True, "id": "10042", "created": True, "error": None}]
    assert calls[0] == ("POST", "/api/rest/api/3/issue",
                        {"fields": {"project": {"key": "SUP"}, "summary": "Urgent: login down"}})
    assert updated[0]["ok"] and calls[1] == ("PUT", "/api/rest/api/3/issue/10042", {"fields": {"summary": "Fixed"}})
    assert updated[1] == {"ok": False, "id": None, "created": None, "error": "record lacks its id (id)"}
    digest = hashlib.md5(b"ann@x.com").hexdigest()
    assert upserted[0]["ok"] and calls[2] == ("PUT", f"/api/lists/abc/members/{digest}", {
        "status_if_new": "subscribed", "email_address": "Ann@X.com", "merge_fields": {"FNAME": "Ann"}})
    assert not upserted[1]["ok"] and "email_address" in upserted[1]["error"] and len(calls) == 3


def test_a_batch_call_writes_many_records_at_once_and_reads_each_ones_fate_from_the_answer(fake_api, sleeps):
    """Mailchimp's batch subscribe: members under ``members``, answered with those created and updated (named by
    their email, which the tool lower-cases) and those refused, each with its message."""
    bodies = []

    def api(seen):
        body = json.loads(seen.body)
        bodies.append(body)
        if seen.method == "PUT":  # the member the batch refused as already there, written by its hash
            return Reply(200, {"id": seen.path.rsplit("/", 1)[-1], "email_address": body["email_address"]})
        created, updated, errors = [], [], []
        for member in body["members"]:
            email = member["email_address"].lower()
            if email.startswith("bad"):
                errors.append({"email_address": email, "error": f"{email} looks fake", "error_code": "ERROR_GENERIC"})
            elif email.startswith("dup"):
                errors.append({"email_address": email, "error": "already a member",
                               "error_code": "ERROR_CONTACT_EXISTS"})
            elif email.startswith("old"):
                updated.append({"id": hashlib.md5(email.encode()).hexdigest(), "email_address": email})
            elif not email.startswith("lost"):  # a member the answer forgets
                created.append({"id": hashlib.md5(email.encode()).hexdigest(), "email_address": email})
        return Reply(200, {"new_members": created, "updated_members": updated, "errors": errors})

    fake_api.script = api
    spec = {"client": {"auth": {"type": "none"}},
            "writes": {"members": {"create": {
                "method": "POST", "path": "/lists/abc", "body": {"status": "subscribed"}, "id_path": "id",
                "batch": {"size": 2, "records": "members", "body": {"update_existing": False},
                          "match": "email_address", "created": "new_members", "updated": "updated_members",
                          "errors": "errors", "one_by_one": ["ERROR_CONTACT_EXISTS"]}},
                "upsert": {"method": "PUT", "path": "/lists/abc/members/{email_address|lower|md5}",
                           "body": {"status_if_new": "subscribed"}, "id_path": "id"}}}}
    emails = ["Ann@X.com", "bad@x.com", "old@x.com", "lost@x.com", "zoe@x.com", "dup@x.com"]
    with rest(fake_api, sleeps, spec) as api_client:
        results = api_client.write("members", [{"email_address": e} for e in emails] + [{"merge_fields": {}}],
                                   mode="upsert", key="email_address")
    assert len(bodies) == 4  # six records, two a batch, then the refused one by its hash; one without an email
    assert bodies[3] == {"status_if_new": "subscribed", "email_address": "dup@x.com"}
    assert bodies[0] == {"update_existing": False, "members": [{"status": "subscribed", "email_address": "Ann@X.com"},
                                                               {"status": "subscribed", "email_address": "bad@x.com"}]}
    assert results[0] == {"ok": True, "id": hashlib.md5(b"ann@x.com").hexdigest(), "created": True, "error": None}
    assert results[1] == {"ok": False, "id": None, "created": None, "error": "bad@x.com looks fake"}
    assert results[2]["ok"] and results[2]["created"] is False
    assert not results[3]["ok"] and "does not name this record" in results[3]["error"]
    assert results[4]["ok"] and results[4]["created"]
    assert results[5] == {"ok": True, "id": hashlib.md5(b"dup@x.com").hexdigest(), "created": None, "error": None}
    assert not results[6]["ok"] and "email_address" in results[6]["error"]


@pytest.mark.parametrize("write, message", [
    ({"create": {"method": "POST", "path": "/lists/{list}", "id_path": "id",
                 "batch": {"size": 10, "records": "members", "match": "email", "created": "new"}}},
     "a batch call writes many records"),
    ({"create": {"method": "POST", "path": "/lists", "id_path": "id",
                 "batch": {"size": 10, "records": "members", "match": "email"}}}, "give created or updated"),
    ({"create": {"method": "POST", "path": "/lists", "id_path": "id",
                 "batch": {"size": 0, "records": "members", "match": "email", "created": "new"}}},
     "greater than or equal to 1"),
    ({"update": {"method": "PUT", "path": "/issues/{id}", "idempotency": {
        "field": "labels", "find": {"endpoint": {"path": "/search"}}}}}, "only a create carries an idempotency key"),
    ({"create": {"method": "POST", "path": "/issues", "id_path": "id", "idempotency": {
        "field": "labels", "value": "sync-{id}", "find": {"endpoint": {"path": "/search"}}}}}, "must hold {key} once"),
    ({"update": {"method": "PUT", "path": "/issues"}}, "has no {id}"),
    ({"create": {"method": "POST", "path": "/issues"}}, "create needs id_path"),
    ({"upsert": {"method": "PUT", "path": "/m/{email|sha1}"}}, "unknown filter 'sha1'"),
    ({}, "declare at least one of create, update and upsert"),
])
def test_a_write_spec_that_cannot_work_is_refused(write, message):
    with pytest.raises(ValidationError, match=message):
        RestWrite.model_validate(write)
