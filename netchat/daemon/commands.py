"""Commands: parsing a request body, finding its handler, and help.

Parsing (:func:`parse_body`): the body is split on whitespace into a command and its
arguments. Single or double quotes group words into one argument; inside quotes a
backslash escapes the quote character and the backslash itself (``\\'``, ``\\"``,
``\\\\``), any other backslash is kept as it is. Each quoted group is its own argument:
``cmd 'a' 'b'`` gives two arguments, where the Perl module's greedy regular expression
gave one (``a' 'b``). A quote inside a word is part of the word, as in Perl. An
unterminated quote is an error (:class:`ParseError`) instead of Perl's silently
truncated argument.

Handlers (:func:`resolve`), as in Net::Chat::Daemon: ``help``; else the ``commands``
map (a string names a method of the daemon, a callable is called with the arguments
only); else a method ``handle`` + the command with its first letter upper-cased
(``hello`` -> ``handleHello``, ``someThing`` -> ``handleSomeThing``). Only an ASCII
letter is upper-cased: ``Save`` reaches ``handleSave`` (as in Perl) but ``\u017fave``
(a long s, which Python upper-cases to ``S``) does not.

Every spelling that reaches a handler has one *canonical name*, the name access
control, audit lines and ad-hoc command nodes use: a ``commands`` key as written, else
the ``handleXxx`` suffix with its first letter lower-cased (``Save`` -> ``save``).
"""

import inspect
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

__all__ = ["ParseError", "Command", "parse_body", "resolve", "find_handler", "arity_error",
           "command_names",
           "help_for", "same_handler"]

_HANDLER_METHOD = re.compile(r"handle([A-Z]\w*)$")
_WORDS = re.compile(r"\S+")


class ParseError(ValueError):
    """The request body cannot be split into a command and arguments."""


def parse_body(body: str) -> Tuple[Optional[str], List[str]]:
    """Split ``body`` into ``(command, arguments)``; ``(None, [])`` when it is blank."""
    words: List[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c.isspace():
            i += 1
            continue
        if c in "'\"":
            quote, start = c, i
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise ParseError("unterminated %s quote starting at position %d"
                                     % (quote, start + 1))
                c = body[i]
                if c == "\\" and i + 1 < n and body[i + 1] in (quote, "\\"):
                    chars.append(body[i + 1])
                    i += 2
                elif c == quote:
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            words.append("".join(chars))
        else:
            match = _WORDS.match(body, i)
            assert match is not None  # at a character that is not a space or a quote
            words.append(match.group())
            i = match.end()
    if not words:
        return None, []
    return words[0], words[1:]


def _ucfirst(name: str) -> str:
    """Upper-case the first letter when it is an ASCII letter (never a Unicode case
    mapping: ``\u017f`` would become ``S``, ``\ufb00`` two letters)."""
    first = name[:1]
    if "a" <= first <= "z":
        return first.upper() + name[1:]
    return name


def _lcfirst(name: str) -> str:
    first = name[:1]
    if "A" <= first <= "Z":
        return first.lower() + name[1:]
    return name


class Command(NamedTuple):
    """A command a request reaches: its canonical name and its handler."""
    name: str
    handler: Callable


def resolve(obj: Any, commands: Dict[str, Any], name: str) -> Optional[Command]:
    """The :class:`Command` that ``name`` (as spelt in a request) reaches on ``obj``,
    or None when no handler answers it. ``help`` maps to ``obj.showHelp``."""
    if not name:
        return None
    if name == "help":
        return Command(name, obj.showHelp)
    target = commands.get(name)
    if isinstance(target, str):
        method = getattr(obj, target, None)
        return Command(name, method) if callable(method) else None
    if callable(target):
        return Command(name, target)
    method_name = "handle" + _ucfirst(name)
    match = _HANDLER_METHOD.match(method_name)
    if match is None:
        return None
    method = getattr(obj, method_name, None)
    if not callable(method):
        return None
    return Command(_lcfirst(match.group(1)), method)


def find_handler(obj: Any, commands: Dict[str, Any], name: str) -> Optional[Callable]:
    """The callable that runs command ``name`` on ``obj`` (None when there is none)."""
    found = resolve(obj, commands, name)
    return found.handler if found is not None else None


def same_handler(a: Callable, b: Callable) -> bool:
    """True when two handlers run the same code (bound methods compare by function)."""
    return getattr(a, "__func__", a) is getattr(b, "__func__", b) and \
        getattr(a, "__self__", None) is getattr(b, "__self__", None)


def command_names(obj: Any, commands: Dict[str, Any]) -> List[str]:
    """Every command ``obj`` answers: the commands map, ``handleXxx`` methods, help."""
    names = set(commands)
    names.add("help")
    for attr in dir(type(obj)):
        match = _HANDLER_METHOD.match(attr)
        if match and callable(getattr(type(obj), attr, None)):
            names.add(_lcfirst(match.group(1)))
    return sorted(names)


def help_for(obj: Any, commands: Dict[str, Any], help_texts: Dict[str, str],
             name: str) -> str:
    """Help on one command: the ``help`` option, else a ``helpXxx`` method, else the
    handler's docstring (first line), else ``"NAME args..."``."""
    if name in help_texts and help_texts[name] is not None:
        return str(help_texts[name])
    method = getattr(obj, "help" + _ucfirst(name), None) if name[:1].isalpha() else None
    if callable(method):
        return str(method())
    handler = find_handler(obj, commands, name)
    doc = getattr(handler, "__doc__", None) if handler is not None else None
    if doc and doc.strip():
        return doc.strip().splitlines()[0].strip()
    return "%s args..." % name


def arity_error(handler: Callable, args: List[Any]) -> Optional[str]:
    """Why ``handler`` cannot be called with ``args`` (a request's words), as a
    reply can say it (``takes no arguments, got 1``); None when it can be. Perl ignored
    extra words (``my ($self) = @_``); a Python handler takes them with ``*args``."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args)
        return None
    except TypeError:
        pass
    params = [p for p in signature.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values()):
        most = None
    else:
        most = len(params)
    least = len([p for p in params if p.default is p.empty])
    if most == 0:
        wanted = "no arguments"
    elif most is None:
        wanted = "at least %d argument%s" % (least, "" if least == 1 else "s")
    elif least == most:
        wanted = "%d argument%s" % (most, "" if most == 1 else "s")
    else:
        wanted = "%d to %d arguments" % (least, most)
    return "takes %s, got %d" % (wanted, len(args))
