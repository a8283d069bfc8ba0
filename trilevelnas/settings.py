"""Declared settings: a field states its rule where it is defined, one checker applies it.

``x: int = setting(default, integer(ge=0))`` stores a :class:`Rule` in the dataclass field's
metadata: its type, whether it may be null, its range or choices, and for lists the rule of each
entry. :func:`coerce_value` converts a value given as JSON or command-line text to the rule's
type; :func:`check_value` checks a value against the rule. The run configuration
(:mod:`trilevelnas.training.config`) and the supernet's (:mod:`trilevelnas.supernet.config`)
declare their fields this way. :func:`parse_json` reads the JSON they come from within bounds
(nesting depth, integer length), so that no input reaches a RecursionError or a ValueError. See
docs/pipeline.md, "Configuration rules".
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, Mapping

from .errors import ConfigError

_INT_LIMIT = 2 ** 63  # ints are seeds, step counts and sizes: they must fit torch's int64
MAX_JSON_DEPTH = 64
"""The deepest nesting of lists and objects :func:`parse_json` reads (a config nests 3 deep)."""
MAX_INT_DIGITS = 100
"""Longer integer literals are not converted: no setting is that large (:class:`HugeInteger`)."""
_SHOW_LIMIT = 80  # messages show at most this many characters of a value
_NULL_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "1", "yes")
_FALSE_WORDS = ("false", "0", "no")
_KINDS = ("int", "float", "bool", "str", "path", "list", "tuple", "mapping")


@dataclass(frozen=True)
class Rule:
    """What one configuration field holds; :func:`check_value` applies it.

    ``kind``: ``int``, ``float``, ``bool``, ``str``, ``path`` (a non-empty string naming a file or
    folder), ``list`` or ``tuple`` (entries follow ``item``; a tuple has exactly ``length``),
    ``mapping`` (a dict whose keys are among ``entries``, each value following its entry's rule).
    ``nullable``: None is allowed (``null``/``none`` on the command line). Scalars: ``low``/``high``
    bounds (``*_open``: the bound itself is excluded), ``choices``, ``multiple_of``; floats must be
    finite. Lists: ``increasing`` (strictly), ``at_most`` (the name of a sibling int field every
    entry may not exceed while that field is > 0). ``path_kind``: ``"file"`` or ``"dir"``, what
    :func:`trilevelnas.training.config.check_paths` expects there; ``flag``: the command-line option that sets it. ``check``:
    an extra test returning a problem text or None. ``note``: what special values mean.
    """

    kind: str
    nullable: bool = False
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    choices: tuple | None = None
    multiple_of: int | None = None
    item: "Rule | None" = None
    entries: "tuple[tuple[str, Rule], ...] | None" = None
    length: int | None = None
    increasing: bool = False
    at_most: str | None = None
    path_kind: str | None = None
    flag: str | None = None
    check: Callable[[Any], str | None] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown rule kind {self.kind!r}")
        if self.kind in ("list", "tuple") and self.item is None:
            raise ValueError("a list or tuple rule needs an item rule")
        if self.kind == "mapping" and not self.entries:
            raise ValueError("a mapping rule needs its entries")

    def allows(self, value: Any) -> bool:
        """Whether a scalar ``value`` of the right type passes the rule's range, choices and checks."""
        return _scalar_problem(value, self) is None


def _bounds(ge, gt, le, lt) -> dict:
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise ValueError("give one lower and one upper bound at most")
    return {"low": gt if gt is not None else ge, "low_open": gt is not None,
            "high": lt if lt is not None else le, "high_open": lt is not None}


def integer(*, ge=None, gt=None, le=None, lt=None, choices=None, multiple_of=None,
            nullable=False, note="") -> Rule:
    """An int field (``ge``/``gt``/``le``/``lt`` bounds, or ``choices``)."""
    return Rule("int", nullable=nullable, choices=tuple(choices) if choices else None,
                multiple_of=multiple_of, note=note, **_bounds(ge, gt, le, lt))


def number(*, ge=None, gt=None, le=None, lt=None, nullable=False, note="") -> Rule:
    """A finite float field with optional bounds."""
    return Rule("float", nullable=nullable, note=note, **_bounds(ge, gt, le, lt))


def boolean(note="") -> Rule:
    """A bool field (``true``/``false``, ``yes``/``no``, ``1``/``0`` on the command line)."""
    return Rule("bool", note=note)


def choice(*options: str, note="") -> Rule:
    """A string field that must be one of ``options``."""
    return Rule("str", choices=tuple(options), note=note)


def text(check: Callable[[Any], str | None] | None = None, note="") -> Rule:
    """A free string field, with an optional extra ``check``."""
    return Rule("str", check=check, note=note)


def path(kind: str, *, flag: str | None = None, note="") -> Rule:
    """A nullable path to a ``"file"`` or a ``"dir"`` (existence is checked by :func:`check_paths`)."""
    if kind not in ("file", "dir"):
        raise ValueError("path kind must be 'file' or 'dir'")
    return Rule("path", nullable=True, path_kind=kind, flag=flag, note=note)


def list_of(item: Rule, *, nullable=False, increasing=False, at_most=None, note="") -> Rule:
    """A list whose entries follow ``item``."""
    return Rule("list", item=item, nullable=nullable, increasing=increasing, at_most=at_most, note=note)


def pair(item: Rule, note="") -> Rule:
    """A tuple of exactly two entries following ``item``."""
    return Rule("tuple", item=item, length=2, note=note)


def mapping(entries: dict[str, Rule], note="") -> Rule:
    """A dict field whose keys are among ``entries`` and whose values follow their entry's rule."""
    return Rule("mapping", entries=tuple(entries.items()), note=note)


def setting(default: Any, rule: Rule):
    """A dataclass field with ``default`` (a list or dict default is copied per instance) and its ``rule``."""
    if isinstance(default, list):
        return field(default_factory=lambda d=tuple(default): list(d), metadata={"rule": rule})
    if isinstance(default, dict):
        return field(default_factory=lambda d=tuple(default.items()): dict(d), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


def declared_rules(cls: type) -> Iterator[tuple[str, Rule]]:
    """``(field name, rule)`` for every field of the dataclass ``cls``, in declaration order.

    A field declared without a rule is a programming error (TypeError naming it), so a new field
    cannot slip past the checks.
    """
    for f in fields(cls):
        rule = f.metadata.get("rule")
        if not isinstance(rule, Rule):
            raise TypeError(f"{cls.__name__}.{f.name} declares no Rule (use setting(default, rule))")
        yield f.name, rule


# ---------------------------------------------------------------------------------- JSON input
class JSONTooDeep(json.JSONDecodeError):
    """JSON whose lists and objects nest deeper than :data:`MAX_JSON_DEPTH` (a JSONDecodeError, so
    every reader that reports malformed JSON reports this too, on one line)."""


class HugeInteger:
    """An integer literal of more than :data:`MAX_INT_DIGITS` digits, left unconverted.

    Python refuses to convert more than 4300 digits (a ValueError) and converts fewer in quadratic
    time; none is a valid setting (ints must fit in 64 bits), so :func:`parse_json` keeps only the
    sign and the digit count, and every rule refuses it as too large, naming the key.
    """

    __slots__ = ("digits", "negative")

    def __init__(self, literal: str):
        self.negative = literal.startswith("-")
        self.digits = len(literal) - self.negative

    def __repr__(self) -> str:
        return f"<a {self.digits}-digit {'negative ' if self.negative else ''}integer>"


_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)  # strings (skipped) and brackets


def _parse_int(literal: str) -> int | HugeInteger:
    return HugeInteger(literal) if len(literal.lstrip("-")) > MAX_INT_DIGITS else int(literal)


def parse_json(text: str) -> Any:
    """``json.loads(text)`` within the bounds every JSON input of the programs keeps to.

    Lists and objects may nest at most :data:`MAX_JSON_DEPTH` levels: deeper text raises
    :class:`JSONTooDeep` (a ``json.JSONDecodeError`` giving the position) before it is parsed,
    instead of a RecursionError. An integer literal longer than :data:`MAX_INT_DIGITS` digits
    becomes a :class:`HugeInteger` instead of a ValueError. Otherwise as ``json.loads``: malformed
    text raises ``json.JSONDecodeError``.
    """
    depth = 0
    for token in _JSON_NESTING.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise JSONTooDeep(f"lists and objects nested deeper than {MAX_JSON_DEPTH} levels",
                                  text, token.start())
        elif bracket in "]}":
            depth -= 1
    return json.loads(text, parse_int=_parse_int)


def _huge_integer_text(value: Any) -> bool:
    """Whether ``value`` is command-line text holding an integer longer than :data:`MAX_INT_DIGITS`."""
    if not isinstance(value, str):
        return False
    s = value.strip().lstrip("+-")
    return len(s) > MAX_INT_DIGITS and s.isdigit()


_TOO_LARGE = "is too large (integers must fit in 64 bits)"


# ------------------------------------------------------------------------------- the checker
def show_value(value: Any) -> str:
    """``value`` as the messages print it: repr, with tuples shown as lists, cut to about
    :data:`_SHOW_LIMIT` characters (the length is given) so that a message stays readable."""
    if isinstance(value, tuple):
        value = list(value)
    text = repr(value)
    if len(text) > _SHOW_LIMIT:
        text = f"{text[:_SHOW_LIMIT - 20]}...{text[-8:]} ({len(text)} characters)"
    return text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _range_text(rule: Rule) -> str:
    lo, hi = rule.low, rule.high
    if lo is not None and hi is not None:
        return (f"must lie in {'(' if rule.low_open else '['}{_num(lo)}, {_num(hi)}"
                f"{')' if rule.high_open else ']'}")
    if lo is not None:
        if lo == 0 and rule.low_open:
            return "must be positive"
        return f"must be {'>' if rule.low_open else '>='} {_num(lo)}"
    return f"must be {'<' if rule.high_open else '<='} {_num(hi)}"


def _type_name(rule: Rule) -> str:
    if rule.kind == "mapping":
        return "a mapping like {" + ", ".join(f"{k!r}: ..." for k, _ in rule.entries) + "}"
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "path": "a path (a string)", "list": "a list like [1, 2]",
            "tuple": f"a list of {rule.length} values"}[rule.kind]


def _scalar_problem(value: Any, rule: Rule) -> str | None:
    """The first way a correctly typed scalar breaks ``rule`` (choices, finiteness, range), or None."""
    if rule.kind == "float" and not math.isfinite(value):
        return "must be finite"
    if rule.kind == "int" and not -_INT_LIMIT < value < _INT_LIMIT:
        return "is too large (integers must fit in 64 bits)"
    if rule.choices is not None and value not in rule.choices:
        return f"expected one of {', '.join(str(c) for c in rule.choices)}"
    if rule.kind in ("int", "float"):
        lo, hi = rule.low, rule.high
        if (lo is not None and (value < lo or (rule.low_open and value == lo))) or \
                (hi is not None and (value > hi or (rule.high_open and value == hi))):
            return _range_text(rule) + (f" ({rule.note})" if rule.note else "")
        if rule.multiple_of and value % rule.multiple_of:
            return f"must be a multiple of {rule.multiple_of}"
    if rule.kind == "path":
        if not value.strip():
            return "must not be empty (use null for none)"
        if "\0" in value:
            return "must not contain a NUL character"
    if rule.check is not None:
        return rule.check(value)
    return None


def _fail(where: str, value: Any, problem: str) -> ConfigError:
    return ConfigError(f"{where} = {show_value(value)}: {problem}")


def _typed(value: Any, rule: Rule) -> bool:
    k = rule.kind
    if k == "bool":
        return isinstance(value, bool)
    if k == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if k == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if k in ("str", "path"):
        return isinstance(value, str)
    if k == "mapping":
        return isinstance(value, Mapping)
    return isinstance(value, (list, tuple))


def check_value(value: Any, rule: Rule, where: str, section: Any = None) -> None:
    """Raise ConfigError ``"<where> = <value>: <problem>"`` unless ``value`` satisfies ``rule``.

    ``where`` is the key path (``search.betas``); list entries are named ``where[i]``. With
    ``section`` (the dataclass instance holding the field) the rule's relation to a sibling field
    (``at_most``) is checked too; without it, only what the value is on its own.
    """
    if value is None:
        if rule.nullable:
            return
        raise ConfigError(f"{where}: may not be null")
    if isinstance(value, HugeInteger):
        raise _fail(where, value, _TOO_LARGE)
    if not _typed(value, rule):
        raise _fail(where, value, f"expected {_type_name(rule)}")
    if rule.kind == "mapping":
        known = dict(rule.entries)
        for key, v in value.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
            check_value(v, known[key], f"{where}[{key!r}]", section)
        return
    if rule.kind not in ("list", "tuple"):
        problem = _scalar_problem(value, rule)
        if problem:
            raise _fail(where, value, problem)
        return
    if rule.kind == "tuple" and len(value) != rule.length:
        raise _fail(where, value, f"expected {rule.length} values")
    for i, v in enumerate(value):
        check_value(v, rule.item, f"{where}[{i}]", section)
    if rule.increasing:
        for i in range(1, len(value)):
            if value[i] <= value[i - 1]:
                raise _fail(f"{where}[{i}]", value[i], f"must be larger than {where}[{i - 1}] = "
                            f"{show_value(value[i - 1])} (the entries must be strictly increasing)")
    if rule.at_most is not None and section is not None:
        limit = getattr(section, rule.at_most, None)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            sibling = f"{where.rsplit('.', 1)[0]}.{rule.at_most}" if "." in where else rule.at_most
            for i, v in enumerate(value):
                if v > limit:
                    raise _fail(f"{where}[{i}]", v, f"must not exceed {sibling} = {limit} (set {where} "
                                "too, e.g. to [])")


def _as_list(value: Any, rule: Rule, where: str) -> list:
    """A list from a JSON list, a tuple, or ``--set`` text (JSON, or ``[a, b]`` with bare words)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        s = value.strip()
        try:
            parsed = parse_json(s)
        except JSONTooDeep as exc:
            raise _fail(where, value, f"{exc.msg}") from None
        except json.JSONDecodeError:
            if s.startswith("[") and s.endswith("]"):  # e.g. [nan, 0.9]: bare words, read per entry
                inner = s[1:-1].strip()
                return [p.strip() for p in inner.split(",")] if inner else []
            raise _fail(where, value, f"expected {_type_name(rule)}") from None
        if isinstance(parsed, list):
            return parsed
    raise _fail(where, value, f"expected {_type_name(rule)}")


def coerce_value(value: Any, rule: Rule, where: str) -> Any:
    """``value`` (a JSON value or ``--set`` text) converted to the type ``rule`` declares.

    Only the type is settled here (``"10"`` → 10, ``"false"`` → False, ``"[0.5, 0.9]"`` →
    (0.5, 0.9), ``"null"`` → None for a nullable field); ranges are :func:`check_value`'s. A value
    that is not of the type raises ConfigError naming ``where``, as does a :class:`HugeInteger` or,
    for an int field, text holding an integer of more than :data:`MAX_INT_DIGITS` digits (too large).
    """
    if value is None or (rule.nullable and isinstance(value, str) and value.strip().lower() in _NULL_WORDS):
        if not rule.nullable:
            raise ConfigError(f"{where}: may not be null")
        return None
    k = rule.kind
    if isinstance(value, HugeInteger) or (k == "int" and _huge_integer_text(value)):
        raise _fail(where, value, _TOO_LARGE)
    if k == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
    elif k == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number_ = value
        if isinstance(value, str):
            try:
                number_ = int(value.strip())
                return number_
            except ValueError:
                try:
                    number_ = float(value)
                except ValueError:
                    number_ = None
        if isinstance(number_, float) and number_.is_integer():
            return int(number_)
    elif k == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif k in ("str", "path"):
        if isinstance(value, str):
            return value
    elif k == "mapping":
        if isinstance(value, Mapping):
            known = dict(rule.entries)
            return {key: coerce_value(v, known[key], f"{where}[{key!r}]") if key in known else v
                    for key, v in value.items()}
    else:
        items = _as_list(value, rule, where)
        if k == "tuple" and len(items) != rule.length:
            raise _fail(where, value, f"expected {rule.length} values")
        out = [coerce_value(v, rule.item, f"{where}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if k == "tuple" else out
    raise _fail(where, value, f"expected {_type_name(rule)}")
