"""``netchat run``: run a Daemon subclass."""

import importlib
import importlib.util
import logging
import os
import sys

from .common import UsageError, connection_options, read_password, setup_logging


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
        module = importlib.util.module_from_spec(spec_)
        sys.path.insert(0, os.path.dirname(path))
        spec_.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError("cannot import %s: %s" % (module_name, exc)) from None
    cls = getattr(module, class_name, None)
    from ..daemon import Daemon
    if not (isinstance(cls, type) and issubclass(cls, Daemon)):
        raise UsageError("%s is not a netchat.Daemon subclass" % spec)
    return cls


def cmd_run(args) -> int:
    setup_logging(args.verbose, logging.INFO)
    cls = load_daemon_class(args.daemon)
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError("options are KEY=VALUE, not %r" % item)
        options[key] = value
    args.user_jid = args.jid
    password = read_password("netchat run", args)
    cls.run(args.jid, retry=args.retry, password=password, threads=args.threads,
            master=args.master, connection_options=connection_options(args), **options)
    return 0  # run() exits; not reached
