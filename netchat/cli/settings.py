"""The types ``netchat run`` expects of its settings (a ``--config`` file, ``-o``),
read from the annotations and defaults of the constructors it passes them to, so that
a wrong type is refused before anything connects, not at the first outage."""

import collections.abc
import inspect
import json
import typing
from typing import Any, Callable, Dict, Optional

#: What a setting may be: ``check(value) -> bool`` and how to say it ("a number").
Kind = typing.NamedTuple("Kind", [("check", Callable[[Any], bool]), ("says", str),
                                  ("plural", str)])

_SCALARS = {
    bool: Kind(lambda v: isinstance(v, bool), "true or false", "booleans"),
    int: Kind(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer",
              "integers"),
    float: Kind(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                "a number", "numbers"),
    str: Kind(lambda v: isinstance(v, str), "a string", "strings"),
}
_LISTS = (list, tuple, set, frozenset, collections.abc.Iterable, collections.abc.Sequence,
          collections.abc.Collection, collections.abc.Set)
_TABLES = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def kind_of(hint: Any) -> Optional[Kind]:
    """The :class:`Kind` an annotation asks for; None: anything goes (``Any``, no
    annotation, one too vague or too odd to check)."""
    if hint is Any:
        return None
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        none_ok = type(None) in args
        found = [kind_of(a) for a in args if a is not type(None)]
        kinds = [k for k in found if k is not None]
        if not kinds or len(kinds) < len(found):
            return None
        if len(kinds) == 1 and not none_ok:
            return kinds[0]
        says = " or ".join(k.says for k in kinds)
        return Kind(lambda v: (none_ok and v is None) or any(k.check(v) for k in kinds),
                    says, " or ".join(k.plural for k in kinds))
    if hint in _LISTS or origin in _LISTS:
        item = kind_of(args[0]) if args and args[0] is not Ellipsis else None
        if item is None:
            return Kind(_is_list, "a list", "lists")
        return Kind(lambda v: _is_list(v) and all(item.check(x) for x in v),
                    "a list of " + item.plural, "lists of " + item.plural)
    if hint in _TABLES or origin in _TABLES:
        return Kind(lambda v: isinstance(v, dict), "a table", "tables")
    if isinstance(hint, type) and hint is not object:
        return Kind(lambda v: isinstance(v, hint), "a " + hint.__name__,
                    hint.__name__ + " objects")
    return None


def kind_of_default(default: Any) -> Optional[Kind]:
    """The :class:`Kind` a parameter without annotation asks for, from its default."""
    if default is inspect.Parameter.empty or default is None:
        return None
    if isinstance(default, (list, tuple)):
        return kind_of(list)
    if isinstance(default, dict):
        return kind_of(dict)
    return _SCALARS.get(type(default))


def parameter_kinds(function: Callable) -> Dict[str, Optional[Kind]]:
    """The :class:`Kind` of each named parameter of ``function`` (None: anything)."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # a name the annotations use cannot be resolved here
        hints = {name: hint for name, hint in getattr(function, "__annotations__",
                                                      {}).items()
                 if not isinstance(hint, str)}
    kinds: Dict[str, Optional[Kind]] = {}
    for param in inspect.signature(function).parameters.values():
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            continue
        hint = hints.get(param.name, inspect.Parameter.empty)
        kinds[param.name] = kind_of(hint) if hint is not inspect.Parameter.empty \
            else kind_of_default(param.default)
    return kinds


def class_kinds(cls: type, extra: Optional[Dict[str, Any]] = None) \
        -> Dict[str, Optional[Kind]]:
    """The :class:`Kind` of each constructor option of ``cls``: the keyword
    parameters along its class hierarchy, the most derived declaration winning;
    ``extra``: more options, name -> annotation."""
    kinds = {name: kind_of(hint) for name, hint in (extra or {}).items()}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            kinds.update(parameter_kinds(init))
        except (TypeError, ValueError):  # no signature to read (a C constructor)
            continue
    return kinds


def show(value: Any) -> str:
    """A value as a config file (TOML) or ``-o`` (JSON) spells it."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def what_is(value: Any) -> str:
    """What kind of value ``value`` is: ``a string``, ``a float``..."""
    if value is None:
        return "null"
    for kind, says in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                       (str, "a string"), ((list, tuple), "a list"), (dict, "a table")):
        if isinstance(value, kind):
            return says
    return "a " + type(value).__name__


def type_error(name: str, value: Any, kind: Optional[Kind]) -> Optional[str]:
    """None when ``value`` is of ``kind``, else what is wrong: ``retry = "soon" is a
    string; expected a number``."""
    if kind is None or kind.check(value):
        return None
    return "%s = %s is %s; expected %s" % (name, show(value), what_is(value), kind.says)
