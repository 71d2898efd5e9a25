"""The stack file: one declarative YAML describing every tool, entity, mapping and rule.

Loaded once and validated completely, so a mistake fails at load with the file, the key path, what was found and
what is allowed, instead of surfacing as a confusing error in the middle of a sync.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
import yaml
from dagster._utils.schedules import is_valid_cron_string
from pydantic import (
    BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator,
)

from sync_pipelines.connectors import KINDS, TOOL_KINDS
from sync_pipelines.connectors.rest import RestClient, RestRead, RestWrite
from sync_pipelines.core import conditions as condition_language

DEFAULT_STACK = Path(__file__).parent / "stacks" / "sandbox.yaml"
# Far above any real stack (the sandbox: 12 KiB, 9 levels, 1,222 values), far below what takes seconds to load.
MAX_BYTES = 1 << 20
MAX_DEPTH = 100
MAX_VALUES = 100_000
# Names become Dagster asset, group, pool, check and schedule names (^[A-Za-z0-9_]+$) and warehouse table and column
# names (63 characters at most on PostgreSQL, longer ones cut silently); `_` starts the pipeline's own columns.
NAME = re.compile(r"[a-z][a-z0-9_]*")
# A tool's own name for a stream or a field (Salesforce `Contact`, `External_Id__c`): it reaches SOQL and URL paths.
TOOL_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
STREAM_NAME = re.compile(rf"{TOOL_IDENTIFIER.pattern}(\.{TOOL_IDENTIFIER.pattern})?")  # or SQL schema.table
MAX_NAME = 40
MAX_TABLE_NAME = 63
# The tables the pipeline keeps per entity: ``pipeline.table(kind, entity)`` refuses any other kind.
ENTITY_TABLE_KINDS = (
    "staged", "staged_changes", "golden", "golden_changes", "golden_failures", "crosswalk", "provenance",
    "conflicts", "field_state", "references", "review_pairs",
)

ToolKind = Literal[KINDS]  # the connectors' registry: a new kind is allowed here once it is registered there
REST = "rest"
FieldType = Literal["string", "email", "phone", "integer", "number", "boolean", "date", "datetime"]
Transform = Literal[
    "trim", "lower", "upper", "title", "snake", "first_word", "rest_words", "domain", "email_domain", "phone_e164",
    "name_key", "utc",
]
Method = Literal["exact", "jaro_winkler", "levenshtein", "token_sort", "equal_or_missing"]
RuleName = Literal["source_of_truth", "last_write_wins"]
Score = Annotated[int, Field(ge=1, le=5)]


class StackError(ValueError):
    """A stack file that cannot be used: every problem found in it, one line each naming the file, the key path,
    what was found and what is allowed, so one round of fixes suffices. ``path`` and ``problem`` are the first's."""

    def __init__(self, file: str | Path, path: str = "", problem: str = "",
                 problems: list[tuple[str, str]] | None = None):
        self.file, self.problems = str(file), problems or [(path, problem)]
        self.path, self.problem = self.problems[0]
        super().__init__("\n".join(f"{file}: at {at or '<top>'}: {what}" for at, what in self.problems))


class _Problems:
    """The problems found so far in one stack file: each check adds its own and goes on where it safely can."""

    def __init__(self, file: Path):
        self.file, self.found = file, []

    def add(self, path: str, problem: str) -> None:
        if (path, problem) not in self.found:
            self.found.append((path, problem))

    def raise_any(self, raw: Any) -> None:
        """Raise them all, in the order the file (read as ``raw``) writes their key paths."""
        if self.found:
            order = {_dotted(keys): i for i, keys in enumerate(_key_paths(raw))}

            def place(path: str) -> int:  # a key path's place, or its nearest written parent's (a missing key)
                while path not in order and path:
                    path = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
                return order.get(path, 0)

            raise StackError(self.file, problems=sorted(self.found, key=lambda problem: place(problem[0])))


def _key_paths(value: Any, keys: tuple = ()) -> list[tuple]:
    """Every key path of ``value``, in the order its file writes them."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [keys, *(path for key, child in children for path in _key_paths(child, (*keys, key)))]


def _did_you_mean(found: Any, allowed) -> str:
    """A suggestion for a near miss (a typo of one of ``allowed``), else nothing."""
    close = difflib.get_close_matches(str(found), [str(a) for a in allowed], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CRON_FIELDS = "minute hour day-of-month month day-of-week"
# Each field's range and the names the cron library Dagster uses accepts for its values.
CRON_RANGES = (
    ("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
CRON_ITEM = re.compile(r"(?P<base>\*|\?|(?P<first>\w+)(?:-(?P<last>\w+))?)(?:/(?P<step>\w+))?")
FEBRUARY = ("2", "feb")


def _cron(value: str | None) -> str | None:
    """Dagster's own test for a schedule's cron, so a bad one fails at load rather than when definitions build;
    the error says which field is wrong and why."""
    if value is not None and not is_valid_cron_string(value):
        raise ValueError(_cron_problem(value))
    return value


def _cron_problem(value: str) -> str:
    """Why Dagster refuses ``value``: its fields checked one by one."""
    fields = value.split()
    if len(fields) != 5:
        return f"{len(fields)} fields; allowed: 5 fields ({CRON_FIELDS}), e.g. '0 2 * * *', or @daily, @hourly..."
    problems = [problem for field, limits in zip(fields, CRON_RANGES)
                for problem in _cron_field_problems(field, *limits)]
    if problems:
        return "; ".join(problems)
    if fields[3].lower() in FEBRUARY:
        return f"day of month {fields[2]} never comes in February; allowed: 1-29 in month {fields[3]}"
    return f"a schedule Dagster refuses; allowed: 5 fields ({CRON_FIELDS}), e.g. '0 2 * * *'"


def _cron_field_problems(field: str, name: str, low: int, high: int, names: tuple[str, ...]) -> list[str]:
    """What is wrong in one cron field: a list of values, ranges (``a-b``) and steps (``*/n``, ``a-b/n``)."""
    problems = []
    for item in field.split(","):
        match = CRON_ITEM.fullmatch(item)
        if match is None:
            problems.append(f"{name} {item!r} is not a value, range (a-b), step (*/n) or list (a,b); allowed: "
                            f"{low}-{high}{' or ' + names[0] + '-' + names[-1] if names else ''}")
            continue
        for value in filter(None, (match["first"], match["last"])):
            if value.lower() in names:
                continue
            if not value.isdigit():
                problems.append(f"{name} {value!r} is not a number; allowed: {low}-{high}"
                                f"{' or ' + ', '.join(names) if names else ''}{_did_you_mean(value.lower(), names)}")
            elif not low <= int(value) <= high:
                problems.append(f"{name} {int(value)} is out of range {low}-{high}")
        if match["step"] is not None and not (match["step"].isdigit() and int(match["step"]) > 0):
            problems.append(f"{name} step {match['step']!r}; allowed: a whole number of 1 or more")
    return problems


class KeyReference(_Model):
    """A reference by a matching key, for a tool that holds no id of the record it names (a company by its name):
    the field's value, through the ``via`` transforms, equals the ``by`` field of one record of ``entity``."""

    entity: str
    by: str
    via: list[Transform] = []

    @field_validator("via", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


# an entity's name: the field holds the id of one of its records, in the record's own tool; or a KeyReference
Reference = Annotated[
    Union[Annotated[str, Tag("id")], Annotated[KeyReference, Tag("key")]],
    Discriminator(lambda value: "key" if isinstance(value, (dict, KeyReference)) else "id"),
]


class FieldSpec(_Model):
    type: FieldType = "string"
    description: str = ""
    reference: Reference | None = Field(default=None, alias="references")

    @property
    def references(self) -> str | None:
        """The entity this field names a record of by that record's id in the tool (None for a key reference)."""
        return self.reference if isinstance(self.reference, str) else None

    @property
    def key_reference(self) -> KeyReference | None:
        return self.reference if isinstance(self.reference, KeyReference) else None


class Entity(_Model):
    description: str = ""
    fields: dict[str, FieldSpec]


class Mapping(_Model):
    """One tool field (a dotted path into the record) copied to one canonical field, through declared transforms."""

    source: str = Field(alias="from")
    to: str
    transforms: list[Transform] = []

    @field_validator("source")
    @classmethod
    def _dotted_path(cls, value: str) -> str:
        if not all(value.split(".")):
            raise ValueError("must be a dotted path of non-empty names, e.g. properties.email")
        return value


DURATION = re.compile(r"([1-9][0-9]*)([mhd])")
DURATION_SECONDS = {"m": 60, "h": 3600, "d": 86400}


class DeletionScan(_Model):
    """How deletions are found in a stream whose tool sends no deletion marker: a listing of the ids it holds now,
    at most ``every`` so often; landed records it no longer lists are deleted, unless more than ``max_share`` of
    them would be (a partial listing must never mass-delete)."""

    scan: Literal["ids"] = "ids"
    every: str = "1d"
    max_share: float = Field(default=0.2, gt=0, le=1)

    @field_validator("every")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not DURATION.fullmatch(value):
            raise ValueError("must be a duration such as 30m, 6h or 1d")
        return value

    @property
    def every_seconds(self) -> int:
        count, unit = DURATION.fullmatch(self.every).groups()
        return int(count) * DURATION_SECONDS[unit]


class Stream(_Model):
    entity: str
    # the tool's stream this one reads, when not its own name: one export read twice, as two entities
    reads: str | None = None
    primary_key: str
    key_transforms: list[Transform] = []  # applied to the primary key: a record keyed by a name's key
    without_key: Literal["quarantine", "skip"] = "quarantine"  # skip: a row with no key is not a record here
    cursor: str | None = None
    deleted_field: str | None = None
    deleted_value: str | bool = True
    deletions: DeletionScan | None = None
    request: RestRead | None = None  # a rest tool's stream: how to read it (connectors/rest.py, docs/rest.md)
    fields: list[Mapping]


class RateLimit(_Model):
    requests: int = Field(gt=0)
    per_seconds: float = Field(gt=0)


class Scopes(_Model):
    read: list[str] = []
    write: list[str] = []


class Tool(_Model):
    kind: ToolKind
    description: str = ""
    base_url: str
    credentials: dict[str, str] = {}
    rate_limit: RateLimit | None = None
    owner: str = "team:data"
    scopes: Scopes = Scopes()
    streams: dict[str, Stream] = {}
    client: RestClient | None = None  # a rest tool's API: auth, headers, error bodies
    writes: dict[str, RestWrite] = {}  # a rest tool's streams that can be written, and how

    @field_validator("credentials")
    @classmethod
    def _env_var_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, env in value.items():
            if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", env):
                raise ValueError(
                    f"credential {key!r} must name an environment variable (UPPER_CASE letters, digits, _), "
                    "not hold a value: secrets never go in the stack file"
                )
        return value


class Priority(_Model):
    frequency: Score
    impact: Score
    feasibility: Score

    @property
    def score(self) -> int:
        return self.frequency * self.impact * self.feasibility


class Trigger(_Model):
    schedule: str | None = None
    event: Literal["webhook"] | None = None

    _schedule_is_cron = field_validator("schedule")(_cron)


class Integration(_Model):
    name: str
    purpose: str
    owner: str
    tools: list[str]
    entities: list[str] = []
    trigger: Trigger
    priority: Priority


class Condition(_Model):
    field: str
    method: Method = "exact"
    threshold: float = Field(default=1.0, ge=0, le=1)


class IdentityRule(_Model):
    name: str
    conditions: list[Condition] = Field(min_length=1)
    blocking: list[str] = []


class ManualOverrides(_Model):
    merge: list[list[str]] = []
    split: list[list[str]] = []


class Identity(_Model):
    rules: list[IdentityRule]  # []: each record is its own entity (an entity only one tool holds)
    max_cluster_size: int = Field(default=12, ge=2)
    manual: ManualOverrides = ManualOverrides()
    model: dict[str, Any] | None = None  # the scored matcher (core/scoring.py; docs/matching.md), checked at load


class Survivorship(_Model):
    source_of_truth: str
    priority: list[str]
    default_rule: RuleName = "source_of_truth"
    fields: dict[str, RuleName] = {}
    # fields whose values must come from one record, never mixed (a name's parts, an address)
    groups: list[list[str]] = []


class Volume(_Model):
    min_ratio: float = Field(default=0.5, gt=0)
    max_ratio: float = Field(default=2.0, gt=0)
    history: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Volume:
        if self.min_ratio > self.max_ratio:
            raise ValueError(f"min_ratio {self.min_ratio} is above max_ratio {self.max_ratio}: no volume could pass")
        return self


class Quality(_Model):
    max_failure_rate: float = Field(default=0.05, ge=0, le=1)
    volume: Volume = Volume()
    expectations: list[dict[str, Any]] = []


WritePolicy = Literal["own", "fill_if_empty", "never"]


class FieldPolicy(_Model):
    """Who owns one field of one destination: ``own`` writes the golden value, ``fill_if_empty`` only where the tool
    holds nothing, ``never`` only reads; ``clear: never`` keeps write-back from emptying a value a person filled."""

    write: WritePolicy = "own"
    clear: Literal["allow", "never"] = "allow"


class _Filtered(_Model):
    """A section with a ``filter``: a condition in the language of quality's ``when``, parsed at load."""

    filter: str | None = None

    @field_validator("filter")
    @classmethod
    def _a_condition(cls, value: str | None) -> str | None:
        if value is not None:
            condition_language.parse(value)  # its ConditionError names the character
        return value

    @property
    def condition(self) -> condition_language.Condition | None:
        return condition_language.parse(self.filter) if self.filter is not None else None


class Destination(_Filtered):
    """Where golden records of ``entity`` are written. ``mode`` ``update`` changes only records the tool holds,
    ``create`` only makes the ones it lacks, ``upsert`` does both; a create matches on ``key`` (a unique field of the
    tool), so a create a crash interrupted is matched, not made twice. ``filter`` (a condition on the golden record)
    decides which golden records may be created; ``max_per_run`` caps the records one run writes (over it nothing
    is written)."""

    tool: str
    entity: str
    stream: str
    key: str
    mode: Literal["update", "upsert", "create"] = "update"
    max_per_run: int | None = Field(default=None, ge=0)
    fields: dict[str, FieldPolicy] = {}  # canonical field → its policy; a field not named is owned
    on_delete: Literal["ignore", "archive"] = "ignore"
    max_deletes_per_run: int = Field(default=25, ge=0)

    @property
    def creates(self) -> bool:
        return self.mode != "update"

    @property
    def updates(self) -> bool:
        return self.mode != "create"


class _ActionTrigger(_Filtered):
    """What makes an action create a record, per record of ``entity`` (landed rows, so per tool record); ``filter``
    (a condition as in quality's ``when``, over the record the templates see) holds some back; ``as`` names the
    record in the templates."""

    entity: str
    record: str = Field(default="record", alias="as")

    @property
    def watched(self) -> str | None:
        """The field whose value the action keeps per record (None: only that the record exists)."""
        return getattr(self, "field", None)

    def describe(self) -> str:
        where = f" and `{self.filter}`" if self.filter else ""
        return self._event() + where

    def _event(self) -> str:
        raise NotImplementedError


class BecomesTrigger(_ActionTrigger):
    """A field newly holds one value (the form ``{entity, field, becomes}`` of earlier stacks)."""

    kind: Literal["becomes"] = "becomes"
    field: str
    becomes: str

    def _event(self) -> str:
        return f"a {self.entity} record's `{self.field}` becomes `{self.becomes}`"


class ChangesTrigger(_ActionTrigger):
    """A field of a known record takes any other value (an empty one too)."""

    kind: Literal["changes"]
    field: str

    def _event(self) -> str:
        return f"a {self.entity} record's `{self.field}` changes"


class NewRecordTrigger(_ActionTrigger):
    """A record appears that the action had not seen."""

    kind: Literal["new_record"]

    def _event(self) -> str:
        return f"a new {self.entity} record appears"


def _trigger_kind(value: Any) -> str | None:
    """``kind``, or ``becomes`` for a trigger written without one."""
    return value.get("kind", "becomes") if isinstance(value, dict) else getattr(value, "kind", None)


ActionTrigger = Annotated[
    Union[Annotated[BecomesTrigger, Tag("becomes")], Annotated[ChangesTrigger, Tag("changes")],
          Annotated[NewRecordTrigger, Tag("new_record")]],
    Discriminator(_trigger_kind),
]


class LinkedRecord(_Model):
    """A target field holding the id of the record of ``stream`` (in the target's tool) linked to the context
    record ``linked_to``: that record itself in the tool, or one whose ``through`` field references it; created from
    ``fields`` (templates over the context and ``as``, the first record of the stream's entity linked to it, or
    nothing) when the tool holds none."""

    stream: str
    linked_to: str
    through: str | None = None
    record: str = Field(default="linked", alias="as")
    fields: dict[str, Any] = {}


class ActionCreate(_Model):
    tool: str
    stream: str
    fields: dict[str, Any] = {}  # field templates (text) and fixed values, e.g. the project a task goes to
    links: dict[str, LinkedRecord] = {}  # target field -> the linked record whose id it takes


class Action(_Model):
    name: str
    when: ActionTrigger
    # context name -> the reference field it follows: `field` of the triggering record, or `name.field` of an
    # earlier related record
    related: dict[str, str] = {}
    create: ActionCreate

    def followed(self) -> list[tuple[str, str, str]]:
        """Each related record: its name, the record it is reached from and that record's reference field."""
        return [(name, owner or self.when.record, reference)
                for name, path in self.related.items() for owner, _, reference in [path.rpartition(".")]]


class Nightly(_Model):
    cron: str = "0 2 * * *"

    _cron_is_cron = field_validator("cron")(_cron)


class Warehouse(_Model):
    url: str = "sqlite:///.sync_pipelines/warehouse.db"

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            sa.engine.make_url(value)
        except sa.exc.ArgumentError:
            raise ValueError("not a database URL, e.g. sqlite:///.sync_pipelines/warehouse.db or "
                             "postgresql+psycopg://user@host:5432/db") from None
        return value


class Stack(_Model):
    version: Literal[1] = 1
    name: str
    timezone: str = "UTC"
    start_date: str
    nightly: Nightly = Nightly()
    warehouse: Warehouse = Warehouse()
    entities: dict[str, Entity]
    tools: dict[str, Tool]
    integrations: list[Integration] = []
    identity: dict[str, Identity] = {}
    survivorship: dict[str, Survivorship] = {}
    quality: dict[str, Quality] = {}
    destinations: list[Destination] = []
    actions: list[Action] = []

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as UTC or Europe/Paris") from None
        return value

    @field_validator("start_date")
    @classmethod
    def _a_day(cls, value: str) -> str:
        try:
            datetime.strptime(value, "%Y-%m-%d")
        except ValueError:
            raise ValueError("must be a day written YYYY-MM-DD, e.g. '2026-09-01'") from None
        return value

    def streams(self) -> list[tuple[str, Tool, str, Stream]]:
        """Every (tool name, tool, stream name, stream) in declaration order."""
        return [(t, tool, s, stream) for t, tool in self.tools.items() for s, stream in tool.streams.items()]


ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Where ``${VAR}`` is expanded: the connection settings, which differ per environment. Anywhere else a stack editor
# could copy a secret of the process into what leaves it (a created record's fields, an integration's purpose shown
# in the UI, a mapping), so it is refused there.
ENV_EXPANDED_AT = "warehouse.url and tools.<tool> connection settings (base_url, rate_limit)"
WAREHOUSE_URL = ("warehouse", "url")
# A value under tools shown in an error when a closed set refuses it: a short name, never a token or a URL.
SHOWN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")


def _dotted(keys) -> str:
    """A key path as errors write it, e.g. tools.hubspot.streams.contacts.fields[1].to (a key may be "2024")."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")


def _expands_env(keys: tuple) -> bool:
    """Whether the value at ``keys`` is a connection setting: ``warehouse.url``, ``tools.<tool>.base_url`` (a URL,
    or the csv tool's folder) or ``tools.<tool>.rate_limit.<requests|per_seconds>``, the options connect() takes."""
    tool = keys[0] == "tools" if keys else False
    return keys == WAREHOUSE_URL or (tool and len(keys) == 3 and keys[2] == "base_url") or (
        tool and len(keys) == 4 and keys[2] == "rate_limit")


def _credential_variables(raw: dict) -> dict[str, tuple[str, tuple | None]]:
    """Every environment variable holding a secret -> what it holds and the one key path it may be expanded at
    (None: none), read from the unexpanded file: the variables the tools name under ``credentials``, those a
    connector names when none is declared (connectors/base.py ``Options.env_var``: ``<TOOL>_<KEY>``), the webhook
    signing secrets, and the URLs with passwords: the Celery broker's and the warehouse's, allowed in warehouse.url
    only."""
    from sync_pipelines.webhooks import SECRET_ENV  # imported late: webhooks imports the pipeline, which imports us

    warehouse = raw.get("warehouse", {}).get("url") if isinstance(raw.get("warehouse"), dict) else None
    secrets = {var: ("the warehouse URL (its password)", WAREHOUSE_URL) for var in (
        "SYNC_WAREHOUSE_URL", *re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", str(warehouse or "")))}
    secrets["SYNC_CELERY_BROKER"] = ("the Celery broker URL (its password)", None)
    secrets.update({var: (f"the webhook signing secret of {kind} tools", None) for kind, var in SECRET_ENV.items()})
    tools = raw.get("tools")
    for name, tool in (tools.items() if isinstance(tools, dict) else ()):
        if not isinstance(tool, dict):
            continue
        declared = tool.get("credentials") if isinstance(tool.get("credentials"), dict) else {}
        kind = TOOL_KINDS.get(tool.get("kind")) if isinstance(tool.get("kind"), str) else None
        for key in {*declared, *(kind.credential_keys if kind else ())}:
            for var in (declared.get(key), f"{str(name).upper()}_{str(key).upper()}"):
                if isinstance(var, str):
                    secrets[var] = (f"credential {key!r} of tool {name!r}", None)
    return secrets


def _expand_env(value: Any, problems: _Problems, secrets: dict[str, tuple[str, tuple | None]],
                keys: tuple = ()) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in the connection settings, so URLs can differ per environment.

    Refused at load, naming the key path and never a value: ``${...}`` anywhere else, and a variable holding a
    secret (``secrets``) anywhere but where it belongs (the warehouse's URL in warehouse.url, a credential nowhere). An unset ``${VAR}`` without a default is an error: an empty URL or path
    would only fail later, far from here. A refused value is kept as written, and its path added to ``problems``.
    """
    path = _dotted(keys)
    if isinstance(value, dict):
        return {k: _expand_env(v, problems, secrets, (*keys, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, problems, secrets, (*keys, i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", value):  # nested in a default too
        held, allowed_at = secrets.get(name, (None, None))
        if held and keys != allowed_at:
            problems.add(path, f"${{{name}}} holds {held}; allowed: no secret in the stack file, not even by "
                               f"reference (a tool reads its credentials itself"
                               f"{', the warehouse URL only in warehouse.url' if allowed_at else ''})")
            return value
    if not _expands_env(keys):
        problems.add(path, f"found a ${{...}} reference; allowed: environment variables are expanded only in "
                           f"{ENV_EXPANDED_AT}")
        return value
    unset = [m[1] for m in ENV_REFERENCE.finditer(value) if m[1] not in os.environ and m[2] is None]
    if unset:
        problems.add(path, f"environment variable {unset[0]} is not set (or write ${{{unset[0]}:-default}})")
        return value
    return ENV_REFERENCE.sub(lambda match: os.environ.get(match[1]) or match[2] or "", value)


class _LoaderLimit(yaml.MarkedYAMLError):
    """Valid YAML beyond what a stack file needs, refused before it costs minutes and gigabytes to load."""


class _StackLoader(yaml.SafeLoader):
    """SafeLoader that refuses what YAML allows but no stack file needs: a repeated key, which silently replaces
    the first (a second `contacts:` stream drops the first one's mappings; keys merged in with ``<<`` may still be
    overridden), nesting deeper than ``MAX_DEPTH``, aliases expanding to more than ``MAX_VALUES`` values (every
    later step copies them out) and integers too long for Python to convert."""

    _depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_DEPTH:  # the composer recurses: a stack overflow otherwise
            raise _LoaderLimit(None, None, f"nested deeper than {MAX_DEPTH} levels; allowed: at most {MAX_DEPTH}",
                               self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node, {})
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            except TypeError:  # an unhashable key, which SafeLoader refuses with its own message
                pass
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # the value may be a secret: not shown
            raise _LoaderLimit(None, None, f"an integer of {len(node.value)} characters; allowed: at most "
                                           f"{sys.get_int_max_str_digits()} digits", node.start_mark) from None


_StackLoader.add_constructor("tag:yaml.org,2002:int", _StackLoader.construct_yaml_int)


def _expanded_size(node: yaml.Node, sizes: dict[int, int | None]) -> int:
    """How many values ``node`` holds once its aliases are copied out, counted once per distinct node (a few
    hundred bytes of nested aliases hold billions); refused beyond ``MAX_VALUES`` or when an alias holds itself."""
    if id(node) in sizes:
        if sizes[id(node)] is None:
            raise _LoaderLimit(None, None, "an alias inside the value it names; allowed: aliases to finished values",
                               node.start_mark)
        return sizes[id(node)]
    sizes[id(node)] = None
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    size = 1 + sum(_expanded_size(child, sizes) for child in children)
    if size > MAX_VALUES:
        raise _LoaderLimit(None, None, f"aliases expand this value to more than {MAX_VALUES} values; allowed: at "
                                       f"most {MAX_VALUES} in the whole file", node.start_mark)
    sizes[id(node)] = size
    return size


def _allowed(values) -> str:
    return ", ".join(sorted(values)) or "(none declared)"


def _check_names(stack: Stack, problems: _Problems) -> None:
    """Names the YAML accepts but Dagster or the warehouse would not, refused here rather than when a sync runs:
    two streams landing in one table (``stg_<tool>_<stream>``, lower-cased, which would overwrite each other), two
    entities sharing a table (``staged_changes_<x>`` is also entity ``changes_<x>``'s staged table), a field named
    like a column derived from another, two integrations or actions of one name, and two assets of one key."""
    from sync_pipelines.core.plan import GOLDEN_SUFFIX
    from sync_pipelines.core.survive import CHANGED_AT_SUFFIX
    from sync_pipelines.pipeline import table as entity_table  # imported late: the pipeline and the warehouse import us
    from sync_pipelines.warehouse import landing_table_name

    suffixes = (CHANGED_AT_SUFFIX, GOLDEN_SUFFIX)

    def check(found: str, path: str, pattern: re.Pattern = NAME, longest: int = MAX_NAME) -> None:
        if len(found) > longest or not pattern.fullmatch(found):
            reserved = " (a leading _ is kept for the pipeline's own columns: _source, _source_id...)"
            problems.add(path, f"found name {found!r}; allowed: names matching ^{pattern.pattern}$ of at most "
                               f"{longest} characters{reserved if found.startswith('_') else ''}")

    tables: dict[str, str] = {}  # every table derived from an entity name -> the entity's key path
    for e, entity in stack.entities.items():
        check(e, f"entities.{e}")
        for f in entity.fields:
            check(f, f"entities.{e}.fields.{f}")
            if f.endswith(suffixes):
                problems.add(f"entities.{e}.fields.{f}", f"found name {f!r}; allowed: field names not ending with "
                             f"{' or '.join(suffixes)} (the pipeline's own columns <field>{CHANGED_AT_SUFFIX} in "
                             f"field_state tables, <field>{GOLDEN_SUFFIX} in write-back)")
        for kind in ENTITY_TABLE_KINDS:
            name = entity_table(kind, e)
            if name in tables:
                kinds = ", ".join(f"{k}_<entity>" for k in ENTITY_TABLE_KINDS)
                problems.add(f"entities.{e}", f"its table {name!r} is also a table of {tables[name]}; allowed: "
                                              f"entities whose tables ({kinds}) all differ")
            elif len(name) > MAX_TABLE_NAME:
                problems.add(f"entities.{e}", f"its table {name!r} has {len(name)} characters; allowed: at most "
                                              f"{MAX_TABLE_NAME} (shorten the entity name)")
            tables.setdefault(name, f"entities.{e}")
    landed: dict[str, str] = {}
    for t, tool in stack.tools.items():
        check(t, f"tools.{t}")
        for s in tool.streams:
            path, table = f"tools.{t}.streams.{s}", landing_table_name(t, s)
            check(s, path, STREAM_NAME)
            if table in landed:
                problems.add(path, f"lands in table {table!r} like {landed[table]}; allowed: one table per stream "
                                   "(rename the tool or the stream)")
            elif len(table) > MAX_TABLE_NAME:
                problems.add(path, f"lands in table {table!r} of {len(table)} characters; allowed: at most "
                                   f"{MAX_TABLE_NAME} (shorten the tool or stream name)")
            landed.setdefault(table, path)
    for i, dest in enumerate(stack.destinations):  # a tool's field, put in a URL path (Salesforce's upsert); its
        # longest real ones: a namespaced Salesforce field, ns__Name__c (15 + 2 + 40 + 3)
        check(dest.key, f"destinations[{i}].key", TOOL_IDENTIFIER, MAX_TABLE_NAME)
    for kind, named in (("integrations", stack.integrations), ("actions", stack.actions)):
        seen: dict[str, str] = {}
        for i, item in enumerate(named):
            check(item.name, f"{kind}[{i}].name")
            if item.name in seen:
                problems.add(f"{kind}[{i}].name", f"found name {item.name!r} again (first at {seen[item.name]}); "
                                                  f"allowed: one of {kind} per name")
            seen.setdefault(item.name, f"{kind}[{i}].name")
    built: dict[tuple[str, ...], str] = {}
    for key, path in asset_keys(stack):
        if key in built:
            problems.add(path, f"builds Dagster asset key {'/'.join(key)!r} like {built[key]}; allowed: one asset "
                               "per key (an action named unlike its tool's streams and <entity>_writeback; one "
                               "destination per tool and entity)")
        built.setdefault(key, path)


def asset_keys(stack: Stack) -> list[tuple[tuple[str, ...], str]]:
    """Every asset key the Dagster definitions build from ``stack``, with the key path it comes from: the shapes of
    assets/extract.py ``extraction_key`` and assets/core.py ``staged_key``, ``golden_key``, ``references_key``,
    ``writeback_key`` and the action assets, as tuples (this module does not build Dagster objects; test_stack_limits compares them)."""
    from sync_pipelines.pipeline import resolved_entities  # imported late: pipeline imports us
    from sync_pipelines.pipeline.references import referenced_entities

    keys = [((t, s), f"tools.{t}.streams.{s}") for t, _, s, _ in stack.streams()]
    for e in resolved_entities(stack):
        keys += [((f"staged_{e}",), f"entities.{e}"), ((f"golden_{e}",), f"entities.{e}")]
        keys += [((f"references_{e}",), f"entities.{e}")] if referenced_entities(stack, e) else []
    keys += [((d.tool, f"{d.entity}_writeback"), f"destinations[{i}]") for i, d in enumerate(stack.destinations)]
    keys += [((a.create.tool, a.name), f"actions[{i}].name") for i, a in enumerate(stack.actions)]
    return keys


def _check_model(raw: dict, path: str, fields: set[str], problems: _Problems) -> None:
    """The scored matcher's section: its own shape (``MatchModel.from_spec``), then the fields it names."""
    from sync_pipelines.core.keys import DERIVED_KEYS, key_source
    from sync_pipelines.core.scoring import MatchModel, SpecError

    try:
        model = MatchModel.from_spec(raw, path)
    except SpecError as error:
        problems.add(error.path, error.problem)
        return
    for i, comparison in enumerate(model.comparisons):
        if comparison.field not in fields:
            problems.add(f"{path}.comparisons[{i}].field", f"unknown field {comparison.field!r}; allowed: "
                         f"{_allowed(fields)}{_did_you_mean(comparison.field, fields)}")
        for k, level in enumerate(comparison.levels):
            if level.other is not None and level.other not in fields:
                problems.add(f"{path}.comparisons[{i}].levels[{k}]", f"unknown field {level.other!r}; allowed: "
                             f"{_allowed(fields)}{_did_you_mean(level.other, fields)}")
    for i, keys in enumerate(model.blocking):
        for k, key in enumerate(keys):
            if key_source(key, sorted(fields)) is None:
                problems.add(f"{path}.blocking[{i}][{k}]" if isinstance(raw["blocking"][i], list)
                             else f"{path}.blocking[{i}]",
                             f"unknown blocking key {key!r}; allowed: a field, or a field followed by "
                             f"{', '.join(DERIVED_KEYS)}; fields: {_allowed(fields)}")


def write_streams(tool: Tool) -> tuple[str, ...] | None:
    """The streams a tool's connector can write (None: any stream the tool declares): a rest tool's are its
    ``writes``, every other kind's are its connector's."""
    from sync_pipelines.connectors import CONNECTORS

    return tuple(tool.writes) if tool.kind == REST else CONNECTORS[tool.kind].write_streams


def _check_rest(stack: Stack, problems: _Problems) -> None:
    """A rest tool is described whole (its client, each stream's request, the fields its write paths name); the
    other kinds' connectors know their API, so they take none of it."""
    for t, tool in stack.tools.items():
        base = f"tools.{t}"
        if tool.kind != REST:
            for key, given in (("client", tool.client is not None), ("writes", bool(tool.writes))):
                if given:
                    problems.add(f"{base}.{key}", f"only a rest tool takes {key}; {t!r} is a {tool.kind} tool, "
                                                  "whose connector knows its API")
            for s, stream in tool.streams.items():
                if stream.request is not None:
                    problems.add(f"{base}.streams.{s}.request", f"only a rest tool's stream takes request; {t!r} "
                                                                 f"is a {tool.kind} tool")
            continue
        if tool.client is None:
            problems.add(f"{base}.client", "a rest tool needs client: its auth, and optionally headers, error_path "
                                           "and page_size (docs/rest.md)")
        else:
            missing = [key for key in tool.client.credential_keys() if key not in tool.credentials]
            if missing:
                problems.add(f"{base}.client.auth", f"names credential key(s) {', '.join(missing)}, which "
                                                    f"{base}.credentials does not declare; declared: "
                                                    f"{_allowed(tool.credentials)}")
        requests: dict[str, RestRead] = {}
        for s, stream in tool.streams.items():
            read = stream.reads or s
            if stream.request is not None and requests.setdefault(read, stream.request) != stream.request:
                problems.add(f"{base}.streams.{s}.request", f"another stream reading {read!r} declares a different "
                                                             "request: one tool stream is read one way")
        for s, stream in tool.streams.items():
            if (stream.reads or s) not in requests:
                problems.add(f"{base}.streams.{s}", "a rest tool's stream needs request: its endpoint, and where "
                                                    "the records are and how pages follow (docs/rest.md)")
        for w, write in tool.writes.items():
            if w not in tool.streams:
                problems.add(f"{base}.writes.{w}", f"unknown stream {w!r}; streams: {_allowed(tool.streams)}")
                continue
            stream = tool.streams[w]
            mapped = {mapping.source for mapping in stream.fields} | {stream.primary_key}
            for mode in ("create", "update", "upsert"):
                call = getattr(write, mode)
                for name, _ in call.placeholders() if call else ():
                    if name != "id" and name not in mapped:
                        problems.add(f"{base}.writes.{w}.{mode}.path",
                                     f"{{{name}}} is no field the stream maps; allowed: id, "
                                     f"{_allowed(mapped)}{_did_you_mean(name, mapped)}")


def _check_references(stack: Stack, problems: _Problems, refused: set[str]) -> None:
    """Cross-references pydantic cannot see: every name used must be declared somewhere else in the file. A name in
    ``refused`` is declared but was refused (reported already): a check that needs it is skipped, not reported."""
    # The rules come from the code that applies them, so the two cannot drift; imported late: pipeline imports us.
    from sync_pipelines.connectors import CONNECTORS
    from sync_pipelines.core.conditions import columns
    from sync_pipelines.core.plan import writable_fields
    from sync_pipelines.core.quality import RULES, ExpectationError, checked_expectation
    from sync_pipelines.core.keys import DERIVED_KEYS

    entities, tools = set(stack.entities), set(stack.tools)
    misnamed: set[tuple[str, str]] = set()  # (tool, stream) with a mapping to an unknown field

    def need(found: str, allowed: set[str], path: str, what: str) -> bool:
        """Whether ``found`` is one of ``allowed``; if not, the problem is added (a near miss with a suggestion)."""
        if found in allowed:
            return True
        if found not in refused:
            problems.add(path, f"unknown {what}: {found!r}; allowed: {_allowed(allowed)}"
                               f"{_did_you_mean(found, allowed)}")
        return False

    for t, tool in stack.tools.items():
        for scope in ("read", "write"):
            for i, entity in enumerate(getattr(tool.scopes, scope)):
                need(entity, entities, f"tools.{t}.scopes.{scope}[{i}]", "entity")
        readable = CONNECTORS[tool.kind].streams  # None: any name (Salesforce objects, files, tables)
        for s, stream in tool.streams.items():
            base = f"tools.{t}.streams.{s}"
            if readable is not None:
                need(stream.reads or s, set(readable), f"{base}.reads" if stream.reads else base,
                     f"stream of a {tool.kind} tool")
            if not need(stream.entity, entities, f"{base}.entity", "entity"):
                continue
            if stream.entity not in tool.scopes.read:
                problems.add(
                    f"{base}.entity",
                    f"tool {t!r} is not allowed to read {stream.entity!r}; add it to tools.{t}.scopes.read "
                    f"(now: {_allowed(tool.scopes.read)})",
                )
            canonical = set(stack.entities[stream.entity].fields)
            mapped: dict[str, int] = {}
            for i, mapping in enumerate(stream.fields):
                if not need(mapping.to, canonical, f"{base}.fields[{i}].to", f"field of entity {stream.entity!r}"):
                    misnamed.add((t, s))
                if mapping.to in mapped:
                    problems.add(f"{base}.fields[{i}].to", f"{mapping.to!r} is already mapped by "
                                 f"fields[{mapped[mapping.to]}]: a field takes one value from a stream")
                mapped.setdefault(mapping.to, i)
    for i, integration in enumerate(stack.integrations):
        for j, tool in enumerate(integration.tools):
            need(tool, tools, f"integrations[{i}].tools[{j}]", "tool")
        for j, entity in enumerate(integration.entities):
            need(entity, entities, f"integrations[{i}].entities[{j}]", "entity")
    for entity, identity in stack.identity.items():
        if not need(entity, entities, f"identity.{entity}", "entity"):
            continue
        fields = set(stack.entities[entity].fields)
        if identity.model is not None:
            _check_model(identity.model, f"identity.{entity}.model", fields, problems)
        for i, rule in enumerate(identity.rules):
            for j, cond in enumerate(rule.conditions):
                need(cond.field, fields, f"identity.{entity}.rules[{i}].conditions[{j}].field", "field")
            if all(cond.method == "equal_or_missing" for cond in rule.conditions):
                problems.add(f"identity.{entity}.rules[{i}].conditions",
                             "found only equal_or_missing conditions, which find no pair; allowed: a rule with at "
                             "least one exact, jaro_winkler, levenshtein or token_sort condition")
            for j, key in enumerate(rule.blocking):
                derived_from = [key[: -len(s)] for s in DERIVED_KEYS if key.endswith(s) and key[: -len(s)] in fields]
                if key in fields and derived_from:  # the resolver reads the field and never derives the key
                    problems.add(
                        f"identity.{entity}.rules[{i}].blocking[{j}]",
                        f"blocking key {key!r} is both field {key!r} and the {key[len(derived_from[0]):]} of field "
                        f"{derived_from[0]!r}; allowed: a key that names one of them (rename field {key!r})",
                    )
                if key not in fields and not derived_from:
                    problems.add(
                        f"identity.{entity}.rules[{i}].blocking[{j}]",
                        f"unknown blocking key {key!r}; allowed: a field, or a field followed by "
                        f"{', '.join(DERIVED_KEYS)}; fields: {_allowed(fields)}"
                        f"{_did_you_mean(key, [*fields, *(f + s for f in fields for s in DERIVED_KEYS)])}",
                    )
    for entity, rules in stack.survivorship.items():
        if not need(entity, entities, f"survivorship.{entity}", "entity"):
            continue
        if need(rules.source_of_truth, tools, f"survivorship.{entity}.source_of_truth", "tool") and not any(
                stream.entity == entity for stream in stack.tools[rules.source_of_truth].streams.values()):
            problems.add(f"survivorship.{entity}.source_of_truth",
                         f"tool {rules.source_of_truth!r} has no stream of {entity!r}: it holds no value to win")
        for i, tool in enumerate(rules.priority):
            need(tool, tools, f"survivorship.{entity}.priority[{i}]", "tool")
        for field in rules.fields:
            need(field, set(stack.entities[entity].fields), f"survivorship.{entity}.fields.{field}", "field")
        grouped: dict[str, str] = {}
        for i, group in enumerate(rules.groups):
            path = f"survivorship.{entity}.groups[{i}]"
            if len(set(group)) < 2:
                problems.add(path, f"found {group}; allowed: two or more different fields that survive together")
                continue
            known = [need(field, set(stack.entities[entity].fields), f"{path}[{j}]", f"field of entity {entity!r}")
                     for j, field in enumerate(group)]
            for j, field in enumerate(group):
                if field in grouped:
                    problems.add(f"{path}[{j}]", f"field {field!r} is already in {grouped[field]}; allowed: each "
                                                 "field in one group at most")
                grouped.setdefault(field, path)
            group_rules = {field: rules.fields.get(field, rules.default_rule) for field in group}
            if len(set(group_rules.values())) > 1:
                problems.add(path, f"found rules {group_rules}; allowed: one rule for all the fields of a group, "
                                   "since they survive together from one record")
            if not all(known):
                continue
            # a group's winner gives every field of the group: a field its stream does not map would be emptied
            # in every tool, when a field a tool does not map is a gap that changes nothing
            for tool_name, _, stream_name, stream in stack.streams():
                mapped = {mapping.to for mapping in stream.fields} & set(group)
                if stream.entity == entity and mapped and mapped != set(group) and (
                        tool_name, stream_name) not in misnamed:
                    problems.add(path, f"tools.{tool_name}.streams.{stream_name} maps {', '.join(sorted(mapped))} "
                                       f"but not {', '.join(sorted(set(group) - mapped))}; allowed: groups whose "
                                       "fields each stream of the entity maps all or none of")
    for entity, quality in stack.quality.items():
        if not need(entity, entities, f"quality.{entity}", "entity"):
            continue
        for i, spec in enumerate(quality.expectations):
            path = f"quality.{entity}.expectations[{i}]"
            try:
                checked_expectation(entity, i, spec, columns=stack.entities[entity].fields)
            except ExpectationError as exc:  # its path goes down to .when for a condition
                expect = spec.get("expect")
                near = _did_you_mean(expect, RULES) if isinstance(expect, str) and expect not in RULES else ""
                problems.add(exc.path, f"{exc.problem}{near}")
                continue
            if not spec["column"].startswith("_"):  # _source, _source_id...: system columns every record has
                need(spec["column"], set(stack.entities[entity].fields), f"{path}.column",
                     f"field of entity {entity!r} (or _-prefixed system column)")
    for i, dest in enumerate(stack.destinations):
        base = f"destinations[{i}]"
        if not all([need(dest.tool, tools, f"{base}.tool", "tool"),
                    need(dest.entity, entities, f"{base}.entity", "entity")]):
            continue
        if dest.entity not in stack.tools[dest.tool].scopes.write:
            problems.add(
                f"{base}.entity",
                f"tool {dest.tool!r} is not allowed to write {dest.entity!r}; "
                f"its write scope is: {_allowed(stack.tools[dest.tool].scopes.write)}",
            )
        streams, writable = stack.tools[dest.tool].streams, write_streams(stack.tools[dest.tool])
        writer = CONNECTORS[stack.tools[dest.tool].kind]
        if not need(dest.stream, set(streams), f"{base}.stream", f"stream of tool {dest.tool!r}"):
            continue
        if writable is not None and not need(dest.stream, set(writable), f"{base}.stream",
                                             f"stream a {stack.tools[dest.tool].kind} tool can write"):
            continue
        if streams[dest.stream].entity not in entities:  # reported at the stream
            continue
        if streams[dest.stream].entity != dest.entity:
            problems.add(
                f"{base}.stream",
                f"stream {dest.stream!r} of tool {dest.tool!r} feeds {streams[dest.stream].entity!r}, "
                f"not {dest.entity!r}",
            )
            continue
        if dest.on_delete == "archive" and not hasattr(writer, "delete"):
            problems.add(f"{base}.on_delete", f"found 'archive', but a {writer.kind} tool cannot delete records; "
                                              "allowed: ignore")
        written = {field for fields in writable_fields(streams[dest.stream]).values() for field in fields}
        for field in dest.fields:
            need(field, written, f"{base}.fields.{field}", f"field {dest.tool}.{dest.stream} maps and can write")
        for column in columns(dest.condition) if dest.condition is not None else ():
            need(column, set(stack.entities[dest.entity].fields), f"{base}.filter",
                 f"field of entity {dest.entity!r} in the filter")
        keyed = [m.to for m in streams[dest.stream].fields if m.source == dest.key or m.source.endswith(f".{dest.key}")]
        if dest.creates and keyed and (keyed[0] not in written or getattr(dest.fields.get(keyed[0]), "write", "own")
                                       == "never"):
            problems.add(f"{base}.key", f"found {dest.key!r}, mapped to {keyed[0]!r}, which this destination cannot "
                                        "write (a transform it cannot invert, or write: never): a create could not "
                                        "carry its key; allowed: a key the destination writes, or one the stack maps "
                                        "no field to (it then holds the golden record's id)")
        modes = stack.tools[dest.tool].writes[dest.stream].modes() if writer.kind == REST else writer.write_modes
        if dest.creates and "upsert" not in modes:
            problems.add(f"{base}.mode", f"found {dest.mode!r}, but a {writer.kind} tool cannot match a record by a "
                                         "key to create it; allowed: update")
    for e, entity in stack.entities.items():
        for f, spec in entity.fields.items():
            if spec.references is not None:
                need(spec.references, entities, f"entities.{e}.fields.{f}.references", "entity")
            key = spec.key_reference
            if key is not None and need(key.entity, entities, f"entities.{e}.fields.{f}.references.entity",
                                        "entity"):
                need(key.by, set(stack.entities[key.entity].fields), f"entities.{e}.fields.{f}.references.by",
                     f"field of entity {key.entity!r}")
    for i, action in enumerate(stack.actions):
        _check_action(stack, problems, action, f"actions[{i}]", need)


ACTION_CONTEXT = {"action": ("name",), "source": ("tool", "stream", "id")}  # besides the records, in every context


def _check_action(stack: Stack, problems: _Problems, action: Action, base: str, need) -> None:
    """An action's trigger, related records, target, links and templates: every name it uses exists, and every
    template reads only what its context will hold. What depends on a refused name is skipped."""
    from sync_pipelines.connectors import CONNECTORS
    from sync_pipelines.core.conditions import columns
    from sync_pipelines.core.templates import TemplateProblem, Variable, check_fields

    when, create = action.when, action.create
    if not need(when.entity, set(stack.entities), f"{base}.when.entity", "entity"):
        return
    fields = stack.entities[when.entity].fields
    if when.watched is not None:
        need(when.watched, set(fields), f"{base}.when.field", f"field of entity {when.entity!r}")
    for column in columns(when.condition) if when.condition is not None else ():
        need(column, set(fields), f"{base}.when.filter", f"field of entity {when.entity!r} in the filter")
    records: dict[str, str | None] = {when.record: when.entity}  # context name -> entity (None: refused)
    names = [(when.record, f"{base}.when.as"), *((n, f"{base}.related.{n}") for n in action.related)]
    for i, (name, at) in enumerate(names):
        taken = {*ACTION_CONTEXT, *(n for n, _ in names[:i])}
        if not NAME.fullmatch(name) or name in taken:
            problems.add(at, f"found {name!r}; allowed: a name ({NAME.pattern}) other than {_allowed(taken)}")
    for name, owner, field in action.followed():
        at = f"{base}.related.{name}"
        known = need(owner, set(records), at, "record to follow a reference from (the trigger's or an earlier "
                                              "related one)")
        records[name] = None
        if not known or records[owner] is None:
            continue
        spec = stack.entities[records[owner]].fields.get(field)
        if spec is None or spec.references is None:
            references = {f for f, s in stack.entities[records[owner]].fields.items() if s.references}
            problems.add(at, f"{field!r} is no reference field of {records[owner]}; allowed: "
                             + (_allowed(references) + _did_you_mean(field, references) if references else
                                "none (declare one: <field>: {references: <entity>})"))
            continue
        # an unknown referenced entity is reported at the field's declaration: the record stays unknown here
        records[name] = spec.references if spec.references in stack.entities else None

    if not need(create.tool, set(stack.tools), f"{base}.create.tool", "tool"):
        return
    tool = stack.tools[create.tool]

    def writable(stream: str, at: str, declared_only: bool) -> bool:
        """A stream the tool's connector can write: declared in the stack (with its entity in the write scope), or,
        for the target, one the tool can only write (a Slack message)."""
        writable = write_streams(tool)
        can_write = set(writable) if writable is not None else set(tool.streams)
        write_only = set() if declared_only else can_write - set(tool.streams)
        if not need(stream, (can_write & set(tool.streams)) | write_only, at,
                    f"stream of tool {create.tool!r} to create {'a linked record' if declared_only else 'records'} "
                    "in"):
            return False
        if stream in tool.streams and tool.streams[stream].entity not in tool.scopes.write and not declared_only:
            problems.add(at, f"tool {create.tool!r} is not allowed to write {tool.streams[stream].entity!r}; its "
                             f"write scope is: {_allowed(tool.scopes.write)}")
        return True

    writable(create.stream, f"{base}.create.stream", declared_only=False)
    # a template is checked only when every record of its context is known: else it would be refused for them too
    complete = None not in records.values()
    variables = {name: Variable(attributes, name) for name, attributes in ACTION_CONTEXT.items()}
    variables.update({name: Variable(tuple(stack.entities[e].fields), e) for name, e in records.items() if e})
    for field, link in create.links.items():
        at = f"{base}.create.links.{field}"
        if field in create.fields:
            problems.add(at, f"field {field!r} is also in create.fields; allowed: one value per field")
            continue
        if not writable(link.stream, f"{at}.stream", declared_only=True) or not need(
                link.linked_to, set(records), f"{at}.linked_to", "record of this action's context") or (
                records[link.linked_to] is None):
            continue
        linked, target = records[link.linked_to], tool.streams[link.stream].entity
        if target not in stack.entities:  # reported at the stream
            continue
        referencing = sorted(f for f, s in stack.entities[target].fields.items() if s.references == linked)
        if link.through is not None:
            if not need(link.through, set(referencing), f"{at}.through",
                        f"field of {target} that references {linked}"):
                continue
        elif target != linked and len(referencing) != 1:
            problems.add(f"{at}.through", f"{target} has {len(referencing)} fields that reference {linked} "
                                          f"({_allowed(set(referencing))}); allowed: name one"
                         if referencing else f"no field of {target} references {linked}, so no {link.stream} "
                                             "record can be linked to it; allowed: a record of "
                                             f"{target} or one a field of {target} references")
            continue
        if link.record in variables:
            problems.add(f"{at}.as", f"found {link.record!r}, which the context already holds; allowed: another "
                                     "name")
            continue
        try:
            if complete:
                check_fields(link.fields, {**variables, link.record: Variable(tuple(stack.entities[target].fields),
                                                                              target)}, f"{at}.fields")
        except TemplateProblem as problem:
            problems.add(problem.path, problem.problem)
    try:
        if complete:
            check_fields(create.fields, variables, f"{base}.create.fields")
    except TemplateProblem as problem:
        problems.add(problem.path, problem.problem)


def _walk(loc: tuple) -> tuple[list, Any]:
    """``loc`` without the tags of unions (which the file does not write), and the annotation it reaches."""
    node: Any = Stack
    kept, members = [], set()
    for part in loc:
        if part in _tagged_members(node):  # an action trigger's kind: its model
            node = _tagged_members(node)[part]
            continue
        if part in members:  # the member of `str | bool` pydantic tried: the value is the same
            continue
        kept.append(part)
        if isinstance(node, type) and issubclass(node, BaseModel):  # a key as the file writes it: `from`
            fields = {spec.alias or name: spec for name, spec in node.model_fields.items()}
            node = fields[part].annotation if part in fields else None
        else:  # dict[str, X] or list[X]: this part is a key or an index
            node = get_args(node)[-1] if get_args(node) else None
        members = set()
        while (get_origin(node) is Union or type(node).__name__ == "UnionType") and not _tagged_members(node):
            options = [a for a in get_args(node) if a is not type(None)]
            members = {getattr(a, "__name__", None) for a in options} if len(options) > 1 else set()
            node = options[0]
    return kept, node


def _keys_at(loc: tuple) -> list[str]:
    """The keys a mapping at ``loc`` may hold, found by walking the models' annotations."""
    node = _walk(loc)[1]
    if not (isinstance(node, type) and issubclass(node, BaseModel)):
        return []
    return [spec.alias or name for name, spec in node.model_fields.items()]  # as written in YAML: `from`


def _tagged_members(node: Any) -> dict[str, type]:
    """The models of a tagged union (``Annotated[Union[Annotated[Model, Tag(t)], ...], Discriminator]``) by tag."""
    if get_origin(node) is Annotated:
        node = get_args(node)[0]
    if get_origin(node) is not Union:
        return {}
    return {meta.tag: get_args(member)[0] for member in get_args(node) if get_origin(member) is Annotated
            for meta in get_args(member)[1:] if isinstance(meta, Tag)}


def _error_keys(error: dict) -> list:
    """The key path of one of pydantic's errors, as the file writes it."""
    return _walk(tuple(p for p in error["loc"] if not str(p).startswith(("function-", "literal["))))[0]


def _pydantic_problem(error: dict, raw: Any) -> tuple[str, str]:
    """One of pydantic's errors as a key path and a problem with, unless it may be a secret, the value found: never
    under ``tools`` or ``warehouse`` (credentials, URLs with tokens or passwords) but for a short name refused by a
    closed set (a tool's kind, a transform), nor for a misspelt key (its value may be one); a near miss gets a
    suggestion."""
    loc, found = _error_keys(error), raw
    for part in loc:
        if isinstance(found, str):  # one value written for a list of them (a key reference's `via`)
            break
        try:
            found = found[int(part)] if isinstance(found, list) else found[part]
        except (KeyError, IndexError, TypeError, ValueError):
            found = None
            break
    detail = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    if error["type"] == "extra_forbidden":
        keys = _keys_at(tuple(error["loc"][:-1]))
        detail = f"unknown key; allowed: {_allowed(keys)}{_did_you_mean(loc[-1], keys)}"
    elif error["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        detail = f"allowed: {error['ctx']['expected']}{_did_you_mean(found, choices) if found else ''}"
    elif error["type"] == "union_tag_invalid":  # a tagged union: its key, or an action trigger's kind
        tag = str(error["ctx"].get("discriminator", "")).strip("'")
        loc, found = [*loc, tag if tag.isidentifier() else "kind"], error["ctx"]["tag"]
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected_tags"])
        detail = f"allowed: {error['ctx']['expected_tags']}{_did_you_mean(found, choices)}"
    a_name = error["type"] in ("literal_error", "union_tag_invalid") and isinstance(found, str) and (
        SHOWN_NAME.fullmatch(found))
    hidden = error["type"] in ("missing", "extra_forbidden") or (
        error["loc"][:1] in (("tools",), ("warehouse",)) and not a_name)
    shown = f"found {found!r}; " if found is not None and not hidden else ""
    return _dotted(loc), f"{shown}{detail}"


class _Remains(Stack):
    """What remains of a stack once its refused values are dropped: its name and first day may be gone too, since no
    check across sections reads them."""

    name: str = ""
    start_date: str = ""


def _pydantic_problems(error: ValidationError, raw: Any) -> list[tuple[str, str]]:
    """Every error pydantic found, one per key path: a value no member of a union takes gets one line."""
    found: dict[str, list[str]] = {}
    for path, problem in (_pydantic_problem(item, raw) for item in error.errors()):
        found.setdefault(path, []).append(problem)
    return [(path, " or ".join(dict.fromkeys(problems))) for path, problems in found.items()]


def _without_refused(raw: dict, errors: list[dict]) -> tuple[Stack | None, set[str], dict[str, list[int]]]:
    """The file without the entries pydantic refused, validated again, for the checks across sections to read: each
    error drops the innermost value holding it that may go (a mapping entry, a list item, a key with a default; a
    top-level key at most). Also returns the names
    of the entries dropped (a reference to one is not reported again) and, per list, the indexes of its items dropped
    (to give the remaining ones their place in the file). None when what remains is no stack."""
    dropped: dict[tuple, bool] = {}  # key path -> whether it is an entry of a mapping or list (not a model's key)
    for error in errors:
        keys = _error_keys(error)
        held = max((i for i in range(len(keys)) if _droppable(tuple(keys[:i]), keys[i])), default=0)
        dropped[tuple(keys[:held + 1])] = get_origin(_walk(tuple(keys[:held]))[1]) in (dict, list)
    pruned, removed = copy.deepcopy(raw), object()
    for keys in dropped:
        container = pruned
        for key in keys[:-1]:
            container = container[key] if isinstance(container, (dict, list)) else None
        if isinstance(container, dict):
            container.pop(keys[-1], None)
        elif isinstance(container, list) and keys[-1] < len(container):
            container[keys[-1]] = removed

    def compact(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: compact(v) for k, v in value.items()}
        return [compact(v) for v in value if v is not removed] if isinstance(value, list) else value

    try:
        stack = _Remains.model_validate(compact(pruned))
    except ValidationError:  # a required part refused, or one the dropped entries leave empty: nothing to check
        return None, set(), {}
    items: dict[str, list[int]] = {}
    for keys in dropped:
        if isinstance(keys[-1], int):
            items.setdefault(_dotted(keys[:-1]), []).append(keys[-1])
    return stack, {keys[-1] for keys, entry in dropped.items() if entry and isinstance(keys[-1], str)}, items


def _droppable(loc: tuple, key: Any) -> bool:
    """Whether the value at ``key`` under ``loc`` can leave the file without making it invalid: an entry of a
    mapping or list, or a key with a default."""
    node = _walk(loc)[1]
    if isinstance(node, type) and issubclass(node, BaseModel):
        return any(key in (name, spec.alias) and not spec.is_required() for name, spec in node.model_fields.items())
    return get_origin(node) in (dict, list)


def _within(path: str, outer: str) -> bool:
    """Whether key path ``path`` is ``outer`` or lies under it."""
    return path == outer or path.startswith((f"{outer}.", f"{outer}["))


def _path_in_file(path: str, dropped_items: dict[str, list[int]]) -> str:
    """A key path of the file without its refused list items, as a key path of the file itself."""
    found = ""
    for part in re.split(r"(\[\d+\])", path):
        if re.fullmatch(r"\[\d+\]", part) and found in dropped_items:
            index, dropped = int(part[1:-1]), dropped_items[found]
            part = f"[{[i for i in range(index + len(dropped) + 1) if i not in dropped][index]}]"
        found += part
    return found


def load_stack(path: str | Path | None = None) -> Stack:
    """Load and validate the stack file: ``path``, else ``$SYNC_STACK``, else the bundled sandbox stack."""
    file = Path(path or os.environ.get("SYNC_STACK") or DEFAULT_STACK)
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise StackError(file, "", f"larger than {MAX_BYTES // (1 << 20)} MiB; allowed: at most {MAX_BYTES} bytes")
        raw = yaml.load(data.decode("utf-8"), Loader=_StackLoader)
    except FileNotFoundError:
        raise StackError(file, "", "file not found (set SYNC_STACK to a stack file)") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise StackError(file, "", f"not UTF-8 text (line {line}): save the file as UTF-8") from None
    except OSError as exc:
        raise StackError(file, "", f"cannot be read: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:  # its text quotes the offending line, which may hold a secret: not shown
        mark, opened = exc.problem_mark, exc.context_mark
        where = f" ({exc.context} from line {opened.line + 1})" if exc.context and opened else ""
        what = "refused" if isinstance(exc, _LoaderLimit) else "not valid YAML"
        raise StackError(file, "", f"{what} at line {mark.line + 1}, column {mark.column + 1}: "
                                   f"{exc.problem}{where}") from None
    except yaml.YAMLError as exc:
        raise StackError(file, "", f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise StackError(file, "", f"expected a mapping at the top, found {type(raw).__name__}")
    problems = _Problems(file)
    raw = _expand_env(raw, problems, _credential_variables(raw))
    kept_as_written = [path for path, _ in problems.found]  # refused ${...}: what pydantic says of them is noise
    try:
        stack, refused, dropped_items = Stack.model_validate(raw), set(), {}
    except ValidationError as exc:
        for path, problem in _pydantic_problems(exc, raw):
            if not any(_within(path, at) or _within(at, path) for at in kept_as_written):
                problems.add(path, problem)
        stack, refused, dropped_items = _without_refused(raw, exc.errors())
    if stack is not None:
        found = _Problems(file)
        _check_names(stack, found)
        _check_references(stack, found, refused)
        _check_rest(stack, found)
        for path, problem in found.found:
            problems.add(_path_in_file(path, dropped_items), problem)
    problems.raise_any(raw)
    return stack
