"""Field templates of derived actions: Jinja2 in its immutable sandbox, checked once against what the context holds.

A stack file must not run code, so a template renders in ``ImmutableSandboxedEnvironment`` (no attribute or key
starting with ``_``, no mutation of a list or a dict), with ``StrictUndefined`` (a misspelt name is an error, never
an empty string), no globals (no ``range``, ``lipsum``, ``cycler``), a short list of filters that make bounded text,
and sequence repetition and powers bounded. Every name is checked at load (`check_fields`): each variable a template
reads must be in its context and each attribute of a record one of its fields, so a mistake fails with its key path
before any sync.

Values are rendered as text, an empty value (``None``) as nothing; a field whose text is empty is left out of the
payload, so the tool keeps its own default. A value that is no string in the stack file (a number, a boolean) is
sent as it is; strings inside lists and mappings are templates too.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateAssertionError, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_TEXT = 100_000  # characters a repetition may make: far above any field a tool takes
MAX_POWER_BITS = 4096
FILTERS = (
    "abs", "capitalize", "default", "d", "first", "float", "int", "join", "last", "length", "lower", "max", "min",
    "replace", "reject", "round", "select", "sort", "string", "title", "trim", "truncate", "unique", "upper",
    "urlencode",
)


class TemplateProblem(ValueError):
    """A template that cannot be used; ``path`` is where it sits below the fields mapping (``.metadata.deal_id``)."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path.lstrip('.') or '<value>'}: {problem}")


@dataclass(frozen=True)
class Variable:
    """What a template may read from one name of its context: the attributes of the value, and what they are
    attributes of, for messages (an entity's name for a record)."""

    attributes: tuple[str, ...]
    of: str


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        """``'x' * n`` and ``n ** m`` only while the result stays small: a template must not fill the memory."""
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) and \
                        len(sequence) * count > MAX_TEXT:
                    raise SecurityError(f"a repetition longer than {MAX_TEXT} is refused")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and \
                right * max(abs(left).bit_length(), 1) > MAX_POWER_BITS:
            raise SecurityError(f"a power of more than {MAX_POWER_BITS} bits is refused")
        return super().call_binop(context, operator, left, right)


def _environment() -> _Environment:
    env = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                       finalize=lambda value: "" if value is None else value)
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in FILTERS}
    return env


ENVIRONMENT = _environment()


@lru_cache(maxsize=4096)
def _compiled(text: str):
    return ENVIRONMENT.from_string(text)


def check(text: str, variables: Mapping[str, Variable], path: str = "") -> None:
    """Refuse ``text`` unless it parses, uses only the allowed filters, reads only ``variables`` and only their
    attributes, and names nothing starting with ``_``."""
    try:
        tree = ENVIRONMENT.parse(text)
        _compiled(text)
    except TemplateSyntaxError as error:
        allowed = f"; filters allowed: {', '.join(FILTERS)}" if isinstance(error, TemplateAssertionError) else ""
        raise TemplateProblem(path, f"not a valid template (line {error.lineno}): {error.message}{allowed}") from None
    for name in sorted(meta.find_undeclared_variables(tree)):
        if name not in variables:
            raise TemplateProblem(path, f"{name!r} is not a variable here{_guess(name, variables)}; known: "
                                        f"{', '.join(sorted(variables))}")
    local = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attribute = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
        if attribute is None:
            continue
        if attribute.startswith("_"):
            raise TemplateProblem(path, f"{attribute!r}: a name starting with _ is refused (it reaches Python "
                                        "internals)")
        owner = node.node.name if isinstance(node.node, nodes.Name) else None
        if owner in variables and owner not in local and attribute not in variables[owner].attributes:
            known = variables[owner].attributes
            raise TemplateProblem(path, f"'{owner}.{attribute}' is not a field of {variables[owner].of}"
                                        + (f" (did you mean {guess[0]}?)" if (guess := difflib.get_close_matches(
                                            attribute, known, n=1)) else f"; fields: {', '.join(known)}"))


def _guess(name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_fields(fields: Any, variables: Mapping[str, Variable], path: str = "") -> None:
    """`check` every string in ``fields`` (a value, or lists and mappings of them), naming its path."""
    for at, text in _strings(fields, path):
        check(text, variables, at)


def _strings(value: Any, path: str):
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def render_fields(fields: Any, context: Mapping[str, Any], path: str = "") -> Any:
    """``fields`` with every string rendered over ``context``; a mapping's entries whose text is empty are left
    out. TemplateProblem names the path and what went wrong (an empty record read, a refused operation)."""
    if isinstance(fields, str):
        try:
            return _compiled(fields).render(context)
        except (TemplateError, RecursionError) as error:
            raise TemplateProblem(path, f"{type(error).__name__}: {error}") from None
    if isinstance(fields, Mapping):
        rendered = {key: render_fields(item, context, f"{path}.{key}") for key, item in fields.items()}
        return {key: item for key, item in rendered.items() if item != ""}
    if isinstance(fields, (list, tuple)):
        return [render_fields(item, context, f"{path}[{index}]") for index, item in enumerate(fields)]
    return fields
