"""``netchat run``: run a Daemon subclass, configured on the command line or in a TOML
file."""

import argparse
import difflib
import functools
import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
from typing import Any, Dict, List

from ..xmpp.endpoints import parse_endpoints
from .common import (UsageError, add_connection_arguments, check_jid, connection_options,
                     failure_hint, read_password, setup_logging)
from .settings import class_kinds, kind_of, parameter_kinds, type_error

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger(__name__)

#: Constructor options that have a flag (or a table) of their own in ``netchat run``.
OWN_FLAGS = {"threads": "--threads", "master": "--master", "password": "--password-file",
             "connection_options": "--host, --port, ... (or the [connection] table)",
             "retry": "--retry", "user": "--jid"}
#: Options the library reads as attributes without a constructor parameter, and
#: their types.
ATTRIBUTE_OPTIONS = ("version_os",)  # netchat.daemon.services: the OS in XEP-0092 answers
ATTRIBUTE_TYPES = {"version_os": bool}
#: Top-level keys of a ``--config`` file (besides the tables [connection], [options]).
CONFIG_KEYS = ("daemon", "jid", "retry", "threads", "master", "password_file", "log_file",
               "log_format")


def load_daemon_class(spec: str):
    """``package.module:Class`` or ``path/to/file.py:Class`` -> the class."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise UsageError("give the daemon as MODULE:CLASS, e.g. mypackage.nodes:MyServer")
    if module_name.endswith(".py") or os.sep in module_name:
        path = os.path.abspath(module_name)
        if not os.path.exists(path):
            raise UsageError("no such file: %s" % module_name)
        spec_ = importlib.util.spec_from_file_location(
            os.path.splitext(os.path.basename(path))[0], path)
        sys.path.insert(0, os.path.dirname(path))

        def load():
            module = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(module)
            return module
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        load = functools.partial(importlib.import_module, module_name)
    try:
        module = load()
    except Exception as exc:  # whatever the module's own code raised, one line
        log.debug("importing %s failed", module_name, exc_info=True)
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name:
            detail = str(exc)
        else:
            detail = "%s: %s" % (type(exc).__name__, exc)
        raise UsageError("cannot import %s: %s" % (module_name, detail)) from None
    cls = getattr(module, class_name, None)
    from ..daemon import Daemon
    if cls is None:
        classes = sorted(name for name, value in vars(module).items()
                         if isinstance(value, type) and issubclass(value, Daemon)
                         and value is not Daemon)
        close = difflib.get_close_matches(class_name, classes, 1)
        raise UsageError("%s: %s not found in %s%s" % (
            spec, class_name, module_name, " (did you mean %r?)" % close[0] if close
            else "; its Daemon subclasses: %s" % ", ".join(classes) if classes else ""))
    if not (isinstance(cls, type) and issubclass(cls, Daemon)):
        raise UsageError("%s is not a netchat.Daemon subclass" % spec)
    return cls


def parse_value(text: str) -> Any:
    """An ``-o`` value: ``true``/``false`` (any case), ``null``/``none``, a number, a
    JSON list, object or "quoted string"; anything else is the text as it is."""
    word = text.strip().lower()
    if word in ("true", "false"):
        return word == "true"
    if word in ("null", "none"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def option_names(cls) -> List[str]:
    """The options a daemon class takes: the keyword parameters of the constructors
    along its class hierarchy (Daemon's, and those a subclass declares)."""
    names = set(ATTRIBUTE_OPTIONS)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                names.add(param.name)
    return sorted(names - {"self"} - set(OWN_FLAGS))


def check_options(cls, options: Dict[str, Any], where: str = "-o "):
    """Refuse an option the class does not take, naming the ones it does, and a value
    not of the type its constructor declares (``where``: what to name it by)."""
    known = option_names(cls)
    kinds = class_kinds(cls, ATTRIBUTE_TYPES)
    for name in options:
        if name in OWN_FLAGS:
            raise UsageError("option %r: use %s" % (name, OWN_FLAGS[name]))
        if name not in known:
            close = difflib.get_close_matches(name, known, 1)
            raise UsageError("%s takes no option %r%s; it takes: %s (a subclass declares "
                             "its own as keyword parameters of __init__)"
                             % (cls.__name__, name, " (did you mean %r?)" % close[0]
                                if close else "", ", ".join(known)))
        problem = type_error(where + name, options[name], kinds.get(name))
        if problem:
            raise UsageError(problem)


def config_kinds() -> Dict[str, Any]:
    """The types of the top-level keys of a ``--config`` file."""
    from ..daemon import Daemon
    daemon = parameter_kinds(Daemon.__init__)
    kinds = {name: kind_of(str) for name in ("daemon", "jid", "password_file", "log_file",
                                             "log_format")}
    kinds.update(retry=parameter_kinds(Daemon.run)["retry"], threads=daemon["threads"],
                 master=daemon["master"])
    return kinds


def connection_kinds() -> Dict[str, Any]:
    """The connection options a ``[connection]`` table may hold, and their types."""
    from ..client.connection import Connection
    from ..daemon import CONNECTION_OPTIONS
    kinds = parameter_kinds(Connection.__init__)
    return {name: kinds.get(name) for name in CONNECTION_OPTIONS}


def read_config(path: str) -> Dict[str, Any]:
    """A ``--config`` TOML file, its keys checked."""
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except OSError as exc:
        raise UsageError("cannot read the config file %s: %s" % (path, exc.strerror)) \
            from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError("config file %s: %s" % (path, exc)) from None
    kinds = config_kinds()
    for key, value in config.items():
        if key in ("connection", "options"):
            if not isinstance(value, dict):
                raise UsageError("config file %s: %r must be a table" % (path, key))
        elif key not in CONFIG_KEYS:
            raise UsageError("config file %s: unknown key %r; known: %s, [connection], "
                             "[options]" % (path, key, ", ".join(CONFIG_KEYS)))
        else:
            problem = type_error(key, value, kinds[key])
            if problem:
                raise UsageError("config file %s: %s" % (path, problem))
    known = connection_kinds()
    for key, value in config.get("connection", {}).items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), 1)
            raise UsageError("config file %s: [connection] takes no key %r%s; known: %s"
                             % (path, key, " (did you mean %r?)" % close[0] if close
                                else "", ", ".join(known)))
        problem = type_error("[connection] " + key, value, known[key])
        if problem:
            raise UsageError("config file %s: %s" % (path, problem))
    return config


def add_run_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run", help="run a Daemon subclass",
        description="Run a netchat.Daemon subclass, logging to stderr (or --log-file)"
                    ". Under systemd (Type=notify) it says READY=1, WATCHDOG=1 and "
                    "STOPPING=1. SIGTERM and "
                    "Ctrl-C stop it cleanly (exit 0); a lost connection ends it with "
                    "exit 1 unless --retry.",
        epilog="-o values: true/false, null, numbers and JSON lists and objects are "
               "parsed (-o max_age=60 -o 'allow=[\"*@example.org\"]'), anything else "
               "is a string. --config FILE.toml holds the same settings: top-level "
               "daemon, jid, retry, threads, master, password_file, log_file, "
               "log_format; a [connection] "
               "table (host, port, ca_file, verify, register, ...); an [options] table "
               "(constructor options). Flags override the file.")
    p.add_argument("daemon", metavar="MODULE:CLASS", nargs="?",
                   help="the Daemon subclass, e.g. netchat.demo:MyServer or "
                        "path/to/nodes.py:MyServer")
    p.add_argument("--jid", help="the daemon's JID, user@domain[/resource]")
    p.add_argument("--config", metavar="FILE", help="read settings from a TOML file")
    p.add_argument("--retry", type=float, metavar="SECONDS",
                   help="reconnect for up to SECONDS per outage (0: forever)")
    p.add_argument("--threads", type=int,
                   help="run handlers on this many worker threads (default 0: inline)")
    p.add_argument("--master", metavar="JID", help="exit when this JID goes away")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the daemon's constructor (repeatable), e.g. "
                        "max_age=60, allow='[\"*\"]', version_os=true")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log-file", metavar="PATH",
                   help="log to PATH (appended to; reopened when logrotate moves it) "
                        "instead of stderr")
    p.add_argument("--log-format", choices=("text", "json"),
                   help="text lines (default) or one JSON object per line: time, "
                        "level, logger, message, exception")
    add_connection_arguments(p)
    p.set_defaults(func=cmd_run)
    return p


def cmd_run(args) -> int:
    config = read_config(args.config) if args.config else {}
    for key in CONFIG_KEYS:
        if getattr(args, key, None) is None and key in config:
            setattr(args, key, config[key])
    if args.log_format not in (None, "text", "json"):
        raise UsageError("config file %s: log_format must be \"text\" or \"json\", not "
                         "%r" % (args.config, args.log_format))
    setup_logging(args.verbose, logging.INFO,
                  register_note="(--no-register turns it off; in --config: register = "
                                "false in [connection])",
                  log_file=args.log_file, log_format=args.log_format or "text")
    if not args.daemon:
        raise UsageError("say which daemon to run: MODULE:CLASS (or 'daemon' in --config)")
    if not args.jid:
        raise UsageError("say who the daemon is: --jid user@domain[/resource] (or 'jid' "
                         "in --config)")
    from ..jabber import Connection
    try:
        Connection(args.jid)  # checks the JID; nothing happens on the network
    except ValueError as exc:
        raise UsageError("--jid: %s" % exc) from None
    check_jid(args.jid, "--jid")
    if args.master is not None:
        check_jid(args.master, "--master", user=False)
    if args.threads is not None and args.threads < 0:
        raise UsageError("--threads must be 0 or more, not %s" % args.threads)
    if args.retry is not None and args.retry < 0:
        raise UsageError("--retry must be 0 (forever) or more, not %s" % args.retry)
    cls = load_daemon_class(args.daemon)
    try:
        check_options(cls, config.get("options", {}), "[options] ")
    except UsageError as exc:
        raise UsageError("config file %s: %s" % (args.config, exc)) from None
    options = dict(config.get("options", {}))
    flags = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError("options are KEY=VALUE, not %r" % item)
        flags[key] = parse_value(value)
    check_options(cls, flags)
    options.update(flags)
    cxn_options = dict(config.get("connection", {}))
    given = connection_options(args)
    if given.keys() & {"host", "port"}:
        cxn_options.pop("endpoints", None)  # a flag overrides the file
    if "endpoints" in given:
        cxn_options.pop("host", None)
        cxn_options.pop("port", None)
    cxn_options.update(given)
    check_endpoints(cxn_options, args.config)
    args.user_jid = args.jid
    password = read_password("netchat run", args)
    try:
        cls.run(args.jid, retry=args.retry, password=password, threads=args.threads or 0,
                master=args.master, connection_options=cxn_options, **options)
    except SystemExit as exc:  # run() said why on stderr, in the except clause
        hint = failure_hint(exc.__context__, cxn_options.get("ca_file")) \
            if exc.__context__ is not None else ""
        if hint:
            print("netchat run: hint: %s" % hint.strip(" ()"), file=sys.stderr)
        raise
    return 0  # run() exits; not reached


def check_endpoints(cxn_options: Dict[str, Any], config_path: str):
    """Refuse ``endpoints`` with ``host`` or ``port``, or an endpoint that is not
    HOST:PORT, before anything connects."""
    if "endpoints" not in cxn_options:
        return
    where = "config file %s: [connection] " % config_path if config_path else ""
    if "host" in cxn_options or "port" in cxn_options:
        raise UsageError("%sgive either host/port or endpoints, not both" % where)
    try:
        parse_endpoints(cxn_options["endpoints"])
    except (ValueError, TypeError) as exc:
        raise UsageError("%sendpoints: %s" % (where, exc)) from None
