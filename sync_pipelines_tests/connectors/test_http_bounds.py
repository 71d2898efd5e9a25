"""The HTTP engine's bounds against hostile or broken servers: a per-call deadline, capped bodies and reads, and
paging that brings nothing new."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time

import pytest

from sync_pipelines.connectors import ConnectorError, ResponseError, connect
from sync_pipelines.connectors.http import (
    Auth, CursorPaginator, HttpClient, NextUrlPaginator, PageRequest, ReadLimits, RetryPolicy,
)
from sync_pipelines_tests.connectors.conftest import Reply

TOKEN = "tok-SECRET-1234567890"


def client(url, sleeps, **overrides) -> HttpClient:
    settings = dict(tool="demo", base_url=url, auth=Auth.bearer(TOKEN), credential_hint="DEMO_TOKEN", sleep=sleeps,
                    retry=RetryPolicy(max_retries=2))
    settings.update(overrides)
    return HttpClient(**settings)


def salesforce_pages(fake_api, records, last=None):
    """Pages of `records(page)`, each pointing at the next one (a fresh URL every time) until `last`."""
    def script(seen):
        page = int(seen.query.get("page", ["0"])[0])
        following = {} if page == last else {"nextRecordsUrl": f"/services/data/v60.0/query/01gX-2000?page={page + 1}"}
        return Reply(200, {"done": page == last, "records": records(page), **following})
    fake_api.script = script


def read_contacts(http):
    return list(http.paginate(PageRequest("GET", "/services/data/v60.0/queryAll"), records_path="records",
                              paginator=NextUrlPaginator("nextRecordsUrl"), stream="Contact", id_field="Id"))


def test_pages_bringing_no_new_record_stop_the_read_naming_tool_and_stream(fake_api, sleeps):
    salesforce_pages(fake_api, lambda page: [{"Id": "003A"}, {"Id": "003B"}])
    with pytest.raises(ResponseError, match=r"salesforce: reading Contact: stopped after GET /services/data/v60.0/"
                                            r"query/01gX-2000\?page=5: 5 pages in a row brought no record not "
                                            r"already read") as failure:
        read_contacts(client(fake_api.url, sleeps, tool="salesforce"))
    assert len(fake_api.seen) == 6  # the first page, then five that brought nothing new
    assert TOKEN not in str(failure.value)


def test_re_sent_boundary_records_and_a_few_stale_pages_are_read_through(fake_api, sleeps):
    """Legit APIs re-send the record at a page boundary, and may send a page or two of known records."""
    def records(page):
        if page in (5, 6, 7, 8):
            return [{"Id": "003-0"}]
        return [{"Id": f"003-{n}"} for n in range(max(0, 3 * page - 1), 3 * page + 3)]

    salesforce_pages(fake_api, records, last=11)
    sent = [record for page in range(12) for record in records(page)]
    assert read_contacts(client(fake_api.url, sleeps, tool="salesforce")) == sent
    assert len(fake_api.seen) == 12


def test_records_without_ids_are_not_judged(fake_api, sleeps):
    fake_api.script = lambda seen: Reply(200, {"data": [{"name": "same"}],
                                               "next": {"offset": str(len(fake_api.seen))} if len(fake_api.seen) < 9
                                               else None})
    http = client(fake_api.url, sleeps)
    assert len(list(http.paginate(PageRequest("GET", "/tasks"), records_path="data",
                                  paginator=CursorPaginator("next.offset", "offset"), stream="tasks"))) == 9


def test_a_read_stops_at_its_page_and_byte_budgets(fake_api, sleeps):
    fake_api.script = lambda seen: Reply(200, {"results": [{"id": str(len(fake_api.seen)), "pad": "x" * 1000}],
                                               "paging": {"next": {"after": str(len(fake_api.seen))}}})
    paginator = CursorPaginator("paging.next.after", "after")
    pages = client(fake_api.url, sleeps, tool="hubspot", limits=ReadLimits(pages=7))
    with pytest.raises(ResponseError, match=r"hubspot: reading contacts: stopped after GET /crm/v3/objects/contacts: "
                                            r"7 pages read, the most one read may take \(limits.pages\)"):
        list(pages.paginate(PageRequest("GET", "/crm/v3/objects/contacts"), records_path="results",
                            paginator=paginator, stream="contacts"))
    assert len(fake_api.seen) == 7
    size = client(fake_api.url, sleeps, tool="hubspot", limits=ReadLimits(read_bytes=5000))
    with pytest.raises(ResponseError, match=r"reading contacts: stopped after GET /crm/v3/objects/contacts: 5,\d+ "
                                            r"bytes received, more than the 5,000 one read may take"):
        list(size.paginate(PageRequest("GET", "/crm/v3/objects/contacts"), records_path="results",
                           paginator=paginator, stream="contacts"))
    assert len(fake_api.seen) == 7 + 5  # five pages of ~1 KB passed 5,000 bytes


class DrippingServer:
    """Answers every request with headers promising 10,000 bytes, then sends one byte every `every` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n")
                while not self.stopped.wait(self.every):
                    conn.sendall(b" ")
            except OSError:
                return  # the client hung up

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


def test_a_server_dripping_its_body_fails_the_call_at_its_deadline_not_retried(sleeps):
    server = DrippingServer(every=0.2)
    try:
        http = client(server.url, sleeps, tool="zendesk", timeout=5, limits=ReadLimits(call_seconds=1.5))
        started = time.monotonic()
        with pytest.raises(ResponseError, match=r"zendesk: reading users: GET http://127.0.0.1:\d+/api/v2/x took "
                                                r"over 1.5 s \(limits.call_seconds; timeout=5 s bounds each socket "
                                                r"read only\)"):
            http.request("GET", "/api/v2/x", params={"api_key": "SECRET-KEY-1"}, stream="users")
        assert time.monotonic() - started < 3
        assert http.stats.requests == 1 and sleeps == []
    finally:
        server.close()


def test_a_gzip_bomb_is_refused_at_the_body_cap_without_expanding_it(fake_api, sleeps):
    bomb = gzip.compress(b'{"data": "' + b"0" * (64 * 2**20) + b'"}', 9)
    assert len(bomb) < 100_000
    fake_api.script = lambda seen: Reply(200, bomb, {"Content-Encoding": "gzip"})
    http = client(fake_api.url, sleeps, tool="stripe", limits=ReadLimits(body_bytes=4 * 2**20))
    with pytest.raises(ResponseError, match=r"stripe: reading customers: GET .*/v1/customers answered a body over 4 "
                                            r"MiB decompressed \(limits.body_bytes\)"):
        list(http.paginate(PageRequest("GET", "/v1/customers"), records_path="data", stream="customers"))
    assert len(fake_api.seen) == 1


def test_gzip_bodies_within_the_cap_are_read(fake_api, sleeps):
    fake_api.script = lambda seen: Reply(200, gzip.compress(json.dumps({"data": [{"id": 1}]}).encode()),
                                         {"Content-Encoding": "gzip"})
    assert client(fake_api.url, sleeps).request("GET", "/v1/customers") == {"data": [{"id": 1}]}


def test_limits_option_is_checked():
    with pytest.raises(ConnectorError, match="option limits must map some of"):
        connect("hubspot", "http://127.0.0.1:9", {"access_token": TOKEN}, limits={"pages": 0})
    with pytest.raises(ConnectorError, match="option limits must map some of"):
        connect("hubspot", "http://127.0.0.1:9", {"access_token": TOKEN}, limits={"page": 10})
    assert connect("hubspot", "http://127.0.0.1:9", {"access_token": TOKEN},
                   limits={"pages": 10}).http.limits == ReadLimits(pages=10)
