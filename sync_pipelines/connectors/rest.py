"""A REST API described in the stack file instead of a Python module (``kind: rest``): the client (auth, headers,
where error bodies hold their message), per stream the request, where its records are, how pages follow and how a
read is made incremental, and how records are written. The spec is typed and validated once, when the stack loads;
``RestConnector`` runs it on the shared HTTP engine, with its retries, rate limits, pagination guards and redaction.
The contract, with examples, is ``docs/rest.md``."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime
from typing import Annotated, Any, Iterator, Literal, Union
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sync_pipelines.connectors.base import ApiConnector, Options, ToolSpec, result
from sync_pipelines.connectors.errors import ConnectorError
from sync_pipelines.connectors.http import (
    Auth, CursorPaginator, HttpClient, LinkHeaderPaginator, NextUrlPaginator, OffsetPaginator, PageNumberPaginator,
    PageRequest, Paginator, dig,
)

ID = "id"  # the placeholder of a write path that stands for the record's id in the tool


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ------------------------------------------------------------------------------------------------ auth


class BearerAuth(_Spec):
    type: Literal["bearer"]
    token: str = "token"  # the credential key that holds the token


class BasicAuth(_Spec):
    type: Literal["basic"]
    username: str | None = None  # the credential key of the user name (Jira: the account's email)
    username_text: str | None = None  # or a fixed user name, for APIs that take any (Mailchimp)
    password: str = "password"  # the credential key of the password or API token

    @model_validator(mode="after")
    def _one_username(self) -> BasicAuth:
        if (self.username is None) == (self.username_text is None):
            raise ValueError("give username (a credential key) or username_text (a fixed user name), not both")
        return self


class ApiKeyAuth(_Spec):
    type: Literal["api_key"]
    key: str = "api_key"  # the credential key
    name: str  # the header or query parameter that carries it
    location: Literal["header", "query"] = "header"
    prefix: str = ""  # e.g. "Token " before the key in a header


class OAuth2ClientCredentials(_Spec):
    """A token fetched from ``token_url`` with the client's id and secret, fetched again when it expires or the API
    refuses it."""

    type: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: str = "client_id"  # credential keys
    client_secret: str = "client_secret"
    scope: str | None = None


class NoAuth(_Spec):
    type: Literal["none"]


RestAuth = Annotated[Union[BearerAuth, BasicAuth, ApiKeyAuth, OAuth2ClientCredentials, NoAuth],
                     Field(discriminator="type")]


class RestClient(_Spec):
    auth: RestAuth
    headers: dict[str, str] = {}
    error_path: str | None = None  # where an error body holds its message or code (dotted; a list's first item)
    page_size: int = Field(default=100, ge=1)

    def credential_keys(self) -> tuple[str, ...]:
        auth = self.auth
        keys = {BearerAuth: ("token",), BasicAuth: ("username", "password"), ApiKeyAuth: ("key",),
                OAuth2ClientCredentials: ("client_id", "client_secret"), NoAuth: ()}[type(auth)]
        return tuple(getattr(auth, attribute) for attribute in keys if getattr(auth, attribute) is not None)


# ------------------------------------------------------------------------------------------- reading


class CursorPages(_Spec):
    type: Literal["cursor"]
    cursor_path: str  # where the body holds the next page's token
    param: str  # the query parameter that sends it back
    stop_path: str | None = None  # a flag in the body that says this was the last page (Jira ``isLast``)
    drop_params: tuple[str, ...] = ()  # parameters of the first call that later pages leave out (the start time)


class OffsetPages(_Spec):
    type: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    total_path: str | None = None  # where the body holds the number of records in all (Mailchimp ``total_items``)


class PageNumberPages(_Spec):
    type: Literal["page_number"]
    param: str = "page"
    start: int = 1
    total_pages_path: str | None = None


class NextUrlPages(_Spec):
    type: Literal["next_url"]
    next_path: str  # where the body holds the next page's URL


class LinkHeaderPages(_Spec):
    type: Literal["link_header"]


class SinglePage(_Spec):
    type: Literal["none"]


RestPaginator = Annotated[Union[CursorPages, OffsetPages, PageNumberPages, NextUrlPages, LinkHeaderPages, SinglePage],
                          Field(discriminator="type")]
TIME_FORMATS = ("iso", "iso_z", "epoch_seconds", "epoch_ms")


class Incremental(_Spec):
    """How a read asks for what changed since a time: ``param`` takes the time in ``format`` (one of
    ``TIME_FORMATS`` or a strftime pattern), inside ``template`` where one is given (``{since}`` marks the place:
    a JQL query)."""

    param: str
    format: str = "iso"
    template: str | None = None
    location: Literal["query", "body"] = "query"

    @model_validator(mode="after")
    def _known_format(self) -> Incremental:
        if self.format not in TIME_FORMATS and "%" not in self.format:
            raise ValueError(f"format {self.format!r}: use one of {', '.join(TIME_FORMATS)} or a strftime pattern "
                             "such as '%Y-%m-%d %H:%M'")
        if self.template is not None and "{since}" not in self.template:
            raise ValueError(f"template {self.template!r} has no {{since}} where the time goes")
        return self

    def value(self, since: datetime) -> str | int:
        if self.format == "epoch_seconds":
            return int(since.timestamp())
        if self.format == "epoch_ms":
            return int(since.timestamp() * 1000)
        text = since.isoformat() if self.format == "iso" else \
            since.isoformat().replace("+00:00", "Z") if self.format == "iso_z" else since.strftime(self.format)
        return text if self.template is None else self.template.replace("{since}", text)


class Endpoint(_Spec):
    method: Literal["GET", "POST"] = "GET"
    path: str
    params: dict[str, str | int | float | bool] = {}
    body: dict[str, Any] | None = None  # a JSON body (a search by POST)


class RestRead(_Spec):
    endpoint: Endpoint
    records_path: str = ""  # dotted; empty: the body is the list of records
    paginator: RestPaginator = SinglePage(type="none")
    incremental: Incremental | None = None
    page_size_param: str | None = None  # the parameter that asks for the client's page size (an offset's limit)
    id_field: str = "id"  # what tells records apart, for the guard against pages that bring nothing new


def read_pages(http: HttpClient, read: RestRead, since: datetime | None, *, stream: str,
               page_size: int | None = None, params: dict[str, Any] | None = None) -> Iterator[dict]:
    """Every record of a read as ``read`` describes it, from ``since`` when its API filters by time; ``params``
    go with the first call, besides the endpoint's. The one reading path of the rest kind and of the built-in kinds
    whose reads are plain REST."""
    query = {**read.endpoint.params, **(params or {})}
    body = dict(read.endpoint.body) if read.endpoint.body is not None else None
    if since is not None and read.incremental is not None:
        if read.incremental.location == "query":
            query[read.incremental.param] = read.incremental.value(since)
        else:
            body = {**(body or {}), read.incremental.param: read.incremental.value(since)}
    pages = read.paginator
    size_param = pages.limit_param if isinstance(pages, OffsetPages) else read.page_size_param
    if size_param and page_size:
        query[size_param] = page_size
    request = PageRequest(read.endpoint.method, read.endpoint.path, params=query, json=body)
    yield from http.paginate(request, records_path=read.records_path, stream=stream, id_field=read.id_field,
                             paginator=_paginator(pages, http, page_size))


def _paginator(pages, http: HttpClient, page_size: int | None) -> Paginator | None:
    if isinstance(pages, CursorPages):
        return CursorPaginator(pages.cursor_path, pages.param, stop_path=pages.stop_path,
                               drop_params=tuple(pages.drop_params))
    if isinstance(pages, OffsetPages):
        return OffsetPaginator(pages.offset_param, pages.limit_param, page_size or 1, pages.total_path)
    if isinstance(pages, PageNumberPages):
        return PageNumberPaginator(pages.param, pages.start, pages.total_pages_path)
    if isinstance(pages, NextUrlPages):
        return NextUrlPaginator(pages.next_path)
    if isinstance(pages, LinkHeaderPages):
        return LinkHeaderPaginator(http)
    return None


# ------------------------------------------------------------------------------------------- writing

_PLACEHOLDER = re.compile(r"\{([^{}|]+)((?:\|\s*\w+\s*)*)\}")
PATH_FILTERS = {"lower": str.lower, "upper": str.upper, "trim": str.strip,
                "md5": lambda text: hashlib.md5(text.encode()).hexdigest()}


class Batch(_Spec):
    """Many records in one call (an API's batch endpoint): the records, each built as the call builds one, go as a
    list under ``records`` in the fixed ``body``, at most ``size`` a call. The answer lists the records it created
    at ``created`` and those it updated at ``updated``, each naming its record by the field ``match`` (by its path
    in the tool, compared without case or surrounding space), and the refused ones at ``errors``, each with its
    message under ``message``. A record the answer does not name failed: the tool never said it was written. A
    record refused with a kind (at ``code``) listed in ``one_by_one`` is written again by the stream's upsert call."""

    size: int = Field(ge=1, le=10_000)
    records: str
    body: dict[str, Any] = {}
    match: str
    created: str | None = None
    updated: str | None = None
    errors: str | None = None
    message: str = "error"
    code: str = "error_code"  # where a refused record's error names its kind
    # kinds of refusal that the stream's upsert call (one call per record) writes instead: a record the batch
    # refuses as already there (Mailchimp's ERROR_CONTACT_EXISTS) is then updated and its id learnt
    one_by_one: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _some_answer(self) -> Batch:
        if self.created is None and self.updated is None:
            raise ValueError("give created or updated (or both): where the answer lists the records written")
        return self


class Idempotency(_Spec):
    """How a create carries its idempotency key into the tool, and how it is found there again: a create a crash
    cut off is then told from one that never reached the tool, so it is neither lost nor made twice. The record's
    ``field`` (a path in the record as sent) gets ``value`` (``{key}``, with filters: ``sync-{key|md5}``), added to
    the list it holds where ``list`` (Jira's labels); ``find`` reads the records holding it, ``{key}`` in its path
    and parameters standing for that value."""

    field: str
    value: str = "{key}"
    list: bool = False
    find: RestRead

    @model_validator(mode="after")
    def _names_the_key(self) -> Idempotency:
        names = [(m.group(1).strip(), [f.strip() for f in m.group(2).split("|") if f.strip()])
                 for m in _PLACEHOLDER.finditer(self.value)]
        if [name for name, _ in names] != ["key"]:
            raise ValueError(f"value {self.value!r} must hold {{key}} once, and no other placeholder")
        unknown = [f for f in names[0][1] if f not in PATH_FILTERS]
        if unknown:
            raise ValueError(f"value {self.value!r}: unknown filter {unknown[0]!r}; filters: {', '.join(PATH_FILTERS)}")
        return self

    def rendered(self, key: str) -> str:
        def fill(match: re.Match) -> str:
            text = key
            for name in (f.strip() for f in match.group(2).split("|") if f.strip()):
                text = PATH_FILTERS[name](text)
            return text
        return _PLACEHOLDER.sub(fill, self.value)


class WriteCall(_Spec):
    """One call that writes a record: ``path`` may hold ``{id}`` (the record's id in the tool) and ``{field}`` (a
    field of the record as written, by its path in the tool, e.g. ``{email_address|lower|md5}``: filters
    ``PATH_FILTERS``); the body is the record, under ``wrap`` if given, merged into the fixed ``body``; the response
    gives the record's id at ``id_path``. With ``batch``, one call writes many records (``Batch``): its path then
    names none, and ``id_path`` is read in each answered record."""

    method: Literal["POST", "PUT", "PATCH"]
    path: str
    body: dict[str, Any] = {}
    wrap: str | None = None
    id_path: str | None = None
    batch: Batch | None = None
    idempotency: Idempotency | None = None  # a create's only

    @model_validator(mode="after")
    def _known_filters(self) -> WriteCall:
        for name, filters in self.placeholders():
            unknown = [f for f in filters if f not in PATH_FILTERS]
            if unknown:
                raise ValueError(f"path {self.path!r}: unknown filter {unknown[0]!r} on {name!r}; filters: "
                                 f"{', '.join(PATH_FILTERS)}")
        if self.batch is not None and self.placeholders():
            raise ValueError(f"path {self.path!r} names {{{self.placeholders()[0][0]}}}: a batch call writes many "
                             "records, so its path can name none of them")
        return self

    def placeholders(self) -> list[tuple[str, list[str]]]:
        return [(m.group(1).strip(), [f.strip() for f in m.group(2).split("|") if f.strip()])
                for m in _PLACEHOLDER.finditer(self.path)]


class RestWrite(_Spec):
    """How a stream's records are written: ``upsert`` (one call that creates or updates, matched by a field in
    its path), or ``create`` and ``update`` (by ``{id}``)."""

    create: WriteCall | None = None
    update: WriteCall | None = None
    upsert: WriteCall | None = None

    @model_validator(mode="after")
    def _some_call(self) -> RestWrite:
        if not (self.create or self.update or self.upsert):
            raise ValueError("declare at least one of create, update and upsert")
        if self.update and ID not in dict(self.update.placeholders()):
            raise ValueError(f"update.path {self.update.path!r} has no {{id}}: an update must name its record")
        if self.create and self.create.id_path is None:
            raise ValueError("create needs id_path: where the response gives the created record's id")
        for name in ("update", "upsert"):
            if getattr(self, name) is not None and getattr(self, name).idempotency is not None:
                raise ValueError(f"{name}.idempotency: only a create carries an idempotency key (an {name} names "
                                 "its record, so sending it again writes nothing twice)")
        return self

    def call_for(self, mode: str, has_id: bool) -> WriteCall | None:
        """The call that writes a record in ``mode``: an upsert call serves an update or a create the API has no
        own call for, and an upsert without one is an update of a record with an id or a create of one without."""
        if mode == "update":
            return self.update or self.upsert
        if mode == "create":
            return self.create or self.upsert
        if not has_id and self.create is not None and self.create.batch is not None:
            return self.create  # many at a time; those it refuses as already there go through the upsert
        return self.upsert or (self.update if has_id else self.create)

    def modes(self) -> tuple[str, ...]:
        return tuple(mode for mode in ("upsert", "update", "create")
                     if self.call_for(mode, True) and self.call_for(mode, False))


class RestSpec(_Spec):
    """A whole ``kind: rest`` tool, as the connector takes it: the client, and the streams it reads and writes."""

    client: RestClient
    reads: dict[str, RestRead] = {}
    writes: dict[str, RestWrite] = {}


# ----------------------------------------------------------------------------------------- connector


def _error_reader(path: str | None):
    def read(body: Any) -> str | None:
        found = dig(body, path) if path else None
        if isinstance(found, list):
            found = found[0] if found else None
        if isinstance(found, dict):
            found = found.get("message") or found.get("detail") or found.get("title")
        return None if found in (None, "") else str(found)[:200]
    return read


def _with_key(data: dict[str, Any], idempotency: Idempotency, value: str) -> dict[str, Any]:
    """``data`` with the idempotency ``value`` at the field's path (added to the list there, for a list field)."""
    *parents, last = idempotency.field.split(".")
    data = dict(data)
    target = data
    for part in parents:
        target[part] = dict(target.get(part) or {})
        target = target[part]
    if idempotency.list:
        held = target.get(last)
        target[last] = [*(held if isinstance(held, list) else [] if held in (None, "") else [held]), value]
    else:
        target[last] = value
    return data


def _listed(answer: Any, path: str | None) -> list:
    found = dig(answer, path) if path else None
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def _matched(value: Any) -> str | None:
    """A batch answer's name for a record, as compared: tools lower-case emails and trim what they store."""
    return None if value in (None, "") else str(value).strip().casefold()


def _merged(base: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in record.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


class RestConnector(ApiConnector):
    kind = "rest"
    write_modes = ("upsert", "update", "create")
    extra_options = frozenset({"rest"})

    def __init__(self, base_url: str, credentials: Any, options: Options) -> None:
        rest = options.extra.get("rest")
        if not isinstance(rest, RestSpec):
            rest = RestSpec.model_validate(rest or {})
        self.rest = rest
        self.streams = tuple(rest.reads)
        self.write_streams = tuple(rest.writes)
        self._token_expires = float("inf")
        self.spec = ToolSpec(credential_keys=rest.client.credential_keys(), auth=self._auth,
                             error_code=_error_reader(rest.client.error_path), headers=dict(rest.client.headers),
                             page_size=rest.client.page_size)
        super().__init__(base_url, credentials or {}, options)
        auth = rest.client.auth
        if isinstance(auth, OAuth2ClientCredentials):
            self.http.reauthenticate = self._fetch_token
        elif isinstance(auth, ApiKeyAuth) and auth.location == "header":
            self.http.session.headers[auth.name] = auth.prefix + self.credentials[auth.key]
        elif isinstance(auth, ApiKeyAuth):  # on every call, next-page URLs included
            self.http.session.params = {auth.name: self.credentials[auth.key]}

    # --------------------------------------------------------------------------------------- auth

    def _auth(self, credentials: dict[str, str]) -> Auth:
        auth = self.rest.client.auth
        if isinstance(auth, BearerAuth):
            return Auth.bearer(credentials[auth.token])
        if isinstance(auth, BasicAuth):
            return Auth.basic(auth.username_text if auth.username is None else credentials[auth.username],
                              credentials[auth.password])
        if isinstance(auth, ApiKeyAuth):
            return Auth.none(credentials[auth.key])  # sent as a header or a parameter of every call
        if isinstance(auth, OAuth2ClientCredentials):
            return Auth.none(credentials[auth.client_secret])  # the token comes with the first call
        return Auth.none()

    def _fetch_token(self) -> Auth:
        """A new access token by the client-credentials grant (RFC 6749 4.4)."""
        auth = self.rest.client.auth
        form = {"grant_type": "client_credentials", "client_id": self.credentials[auth.client_id],
                "client_secret": self.credentials[auth.client_secret], **({"scope": auth.scope} if auth.scope else {})}
        self.http.session.headers.pop("Authorization", None)
        body = self.http.request("POST", auth.token_url, data=form)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ConnectorError(f"{self.name}: {auth.token_url} answered without an access_token", tool=self.name)
        expires = body.get("expires_in")
        self._token_expires = time.monotonic() + float(expires) - 30 if isinstance(expires, (int, float)) \
            else float("inf")
        return Auth.bearer(token)

    def _authenticated(self) -> None:
        if isinstance(self.rest.client.auth, OAuth2ClientCredentials) and (
                "Authorization" not in self.http.session.headers or time.monotonic() >= self._token_expires):
            self.http.use_auth(self._fetch_token())

    # ------------------------------------------------------------------------------------- reading

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        self._authenticated()
        yield from read_pages(self.http, self.rest.reads[stream], since, stream=stream, page_size=self.page_size)

    # ------------------------------------------------------------------------------------- writing

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        """By ``RestWrite.call_for``: an upsert without an upsert call updates a record that carries its id and
        creates one that does not (an action's new record). A call with a batch writes its records ``Batch.size``
        at a time, any other one call per record; results come back in the records' order."""
        spec = self.rest.writes[stream]
        self._authenticated()
        if spec.call_for(mode, True) is None and spec.call_for(mode, False) is None:
            raise ConnectorError(f"{self.name}: {stream} declares no write for mode {mode!r}; declared: "
                                 f"{', '.join(spec.modes()) or 'none'}")
        results: list[dict[str, Any] | None] = [None] * len(records)
        batched: dict[int, list[tuple[int, dict, Any]]] = {}
        for position, record in enumerate(records):
            prepared = self._prepare(spec, record, mode, key)
            if isinstance(prepared, dict):  # refused before any call
                results[position] = prepared
            elif prepared[0].batch is not None:
                batched.setdefault(id(prepared[0]), []).append((position, *prepared[1:]))
            else:
                call, data, record_id = prepared
                results[position] = self._write_batch(
                    [record], lambda _, c=call, d=data, r=record_id: [self._write_one(spec, c, d, r)])[0]
        calls = {id(c): c for c in (spec.create, spec.update, spec.upsert) if c is not None}
        for call_id, waiting in batched.items():
            call = calls[call_id]
            for start in range(0, len(waiting), call.batch.size):
                part = waiting[start:start + call.batch.size]
                answers = self._write_batch([data for _, data, _ in part],
                                            lambda datas, c=call: self._write_many(spec, c, datas))
                for (position, _, _), answer in zip(part, answers):
                    results[position] = answer
        return results

    def _prepare(self, spec: RestWrite, record: dict, mode: str,
                 key: str | None) -> tuple[WriteCall, dict, Any] | dict[str, Any]:
        """The call that writes ``record``, the record as sent and its id; or the failed result of a record that
        cannot be written."""
        data = dict(record)
        idempotency_key = data.pop("idempotency_key", None)
        id_field = key if mode == "update" and key else ID  # an upsert's key is a field of the record: it stays
        record_id = data.pop(id_field, None) if mode != "create" else None
        call = spec.call_for(mode, record_id not in (None, ""))
        if call is not None and call.idempotency is not None and idempotency_key:
            data = _with_key(data, call.idempotency, call.idempotency.rendered(str(idempotency_key)))
        if mode == "update" and record_id in (None, ""):
            return result(False, error=f"record lacks its id ({id_field})")
        if call is None:  # an upsert of a record with an id, where only creates are declared
            return result(False, error=f"{self.name} declares no update for a record with an id ({record_id})")
        if call.batch is not None and dig(data, call.batch.match) in (None, ""):
            return result(False, error=f"record lacks {call.batch.match}, which names it in the batch's answer")
        return call, data, record_id

    def _write_one(self, spec: RestWrite, call: WriteCall, data: dict, record_id: Any) -> dict[str, Any]:
        try:
            path = self._path(call, data, record_id)
        except KeyError as missing:
            return result(False, error=f"record lacks {missing.args[0]}, which the path {call.path} names")
        answer = self.http.request(call.method, path, json=self._body(call, data), idempotent=call.method != "POST")
        found = dig(answer, call.id_path) if call.id_path else None
        return result(True, found if found is not None else record_id, self._created(spec, call))

    def find_created(self, stream: str, key: str) -> str | None:
        """Where the stream's create declares its ``idempotency``: the id of the one record holding the key, None
        when none does; two holding it are refused (which one the create made cannot be told)."""
        self._check_stream(stream, self.write_streams, "look up")
        create = self.rest.writes[stream].create
        if create is None or create.idempotency is None:
            return super().find_created(stream, key)
        self._authenticated()
        value = create.idempotency.rendered(key)
        find = create.idempotency.find
        endpoint = find.endpoint.model_copy(update={
            "path": find.endpoint.path.replace("{key}", quote(value, safe="")),
            "params": {k: v.replace("{key}", value) if isinstance(v, str) else v
                       for k, v in find.endpoint.params.items()}})
        found = {str(dig(record, find.id_field)) for record in read_pages(
            self.http, find.model_copy(update={"endpoint": endpoint}), None, stream=stream)}
        if len(found) > 1:
            raise ConnectorError(f"{self.name}: {len(found)} {stream} records hold the idempotency key {value!r} "
                                 f"({', '.join(sorted(found)[:3])}): keep one in the tool", tool=self.name)
        return found.pop() if found else None

    @staticmethod
    def _body(call: WriteCall, data: dict) -> dict[str, Any]:
        return _merged(call.body, {call.wrap: data} if call.wrap else data)

    @staticmethod
    def _created(spec: RestWrite, call: WriteCall) -> bool | None:
        return True if call is spec.create else None if call is spec.upsert else False

    def _write_many(self, spec: RestWrite, call: WriteCall, datas: list[dict]) -> list[dict[str, Any]]:
        """One batch call, and each record's result as the answer tells it."""
        batch = call.batch
        body = _merged(batch.body, {batch.records: [self._body(call, data) for data in datas]})
        answer = self.http.request(call.method, call.path, json=body, idempotent=call.method != "POST")
        told: dict[str, dict[str, Any]] = {}
        for path, created in ((batch.created, True), (batch.updated, False)):
            for item in _listed(answer, path):
                found = dig(item, call.id_path) if call.id_path else None
                told.setdefault(_matched(dig(item, batch.match)), result(True, found, created))
        again: set[str | None] = set()
        for item in _listed(answer, batch.errors):
            name = _matched(dig(item, batch.match))
            if spec.upsert is not None and dig(item, batch.code) in batch.one_by_one:
                again.add(name)
            told.setdefault(name, result(False, error=str(dig(item, batch.message) or "refused")[:200]))
        results = []
        for data in datas:
            name = _matched(dig(data, batch.match))
            if name in again:
                results.append(self._write_batch([data], lambda _, d=data: [self._write_one(spec, spec.upsert, d,
                                                                                            None)])[0])
            else:
                results.append(told.get(name) or result(
                    False, error=f"the batch answer does not name this record ({batch.match})"))
        return results

    @staticmethod
    def _path(call: WriteCall, record: dict, record_id: Any) -> str:
        def fill(match: re.Match) -> str:
            name = match.group(1).strip()
            value = record_id if name == ID else dig(record, name)
            if value in (None, ""):
                raise KeyError(name)
            text = str(value)
            for name_of_filter in (f.strip() for f in match.group(2).split("|") if f.strip()):
                text = PATH_FILTERS[name_of_filter](text)
            return quote(text, safe="")
        return _PLACEHOLDER.sub(fill, call.path)
