"""The parts of xmpppy that netchat uses, loaded without ``xmpp/__init__.py``.

``import xmpp`` runs xmpppy's ``__init__.py``, which imports every module of the
package: transports (http.client, email, gzip, urllib, dnspython or pydns for SRV
look-ups), auth, roster, features, browser, filetransfer, commands. netchat owns the
socket, TLS, SASL and the parser; from xmpppy it needs only the stanza classes
(``xmpp.simplexml``, ``xmpp.protocol``) and the ``Client``/``PlugIn``/``Dispatcher``
plumbing (``xmpp.client``, ``xmpp.dispatcher``, ``xmpp.debug``). Loading only those
saves 1.5 to 3 MiB of RSS in every netchat process (measured on CPython 3.11: a fresh
``import netchat`` 21.8 -> 19.9 MiB from .pyc files, 26.0 -> 23.1 MiB compiling from
source; an idle ``python -m bench`` echo peer 27.4 -> 25.9 and 31.0 -> 29.4 MiB).

:func:`load` (run when this module is imported, which ``netchat/__init__.py`` does before
anything else) does so if ``xmpp`` is not imported yet:

* the ``xmpp`` package module is made from its real spec and put in ``sys.modules``
  without running its ``__init__.py``; the submodules above are imported into it;
* ``xmpp.client`` imports ``transports`` and ``roster`` at its top but only uses
  them in ``Client.connect``, ``auth`` and ``sendInitPresence``, which netchat never
  calls: it gets stand-ins that import the real modules on first use;
* the package gets a module ``__getattr__`` (and ``__dir__``): the first access to a
  name it does not have yet (``xmpp.Client``, ``xmpp.auth``, ``from xmpp import *``)
  runs the real ``__init__.py`` in that same module object, so a user's later
  ``import xmpp`` gets the full package, with the very classes netchat uses.

The package module is never replaced, so ``xmpp.client``'s own ``import xmpp`` and
every ``isinstance`` check see one set of modules and classes. :func:`complete` runs
the real ``__init__.py`` at once.
"""

import importlib
import importlib.util
import sys
import threading

__all__ = ["load", "complete", "NEEDED", "DEFERRED"]

#: submodules netchat imports (in this order; each imports the ones before it)
NEEDED = ("simplexml", "protocol", "debug", "client", "dispatcher")
#: submodules ``xmpp.client`` imports at its top, given stand-ins until first use
DEFERRED = ("transports", "roster")

_lock = threading.RLock()
# package: the one load() made; complete: its __init__.py has run; loading: the id of
# the thread running that __init__.py
_state = {"package": None, "complete": False, "loading": None}


class _Deferred:
    """Stands for ``xmpp.<name>`` in ``xmpp.client`` until an attribute is used: then
    imports the real module, puts it in ``xmpp.client`` instead and answers from it."""

    def __init__(self, name: str):
        self._name = name

    def _resolve(self):
        module = importlib.import_module("xmpp." + self._name)
        client = sys.modules.get("xmpp.client")
        if client is not None and client.__dict__.get(self._name) is self:
            setattr(client, self._name, module)
        return module

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return getattr(self._resolve(), attr)

    def __repr__(self):
        return "<not yet imported: xmpp.%s>" % self._name


def load():
    """The ``xmpp`` package, with :data:`NEEDED` imported; its ``__init__.py`` is not
    run unless ``xmpp`` was imported before (then that package is returned as is)."""
    with _lock:
        package = sys.modules.get("xmpp")
        if package is not None:
            return package
        spec = importlib.util.find_spec("xmpp")
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            import xmpp  # an unusual installation: the whole package, the usual way
            return xmpp
        package = importlib.util.module_from_spec(spec)
        sys.modules["xmpp"] = package
        stand_ins = {name: _Deferred(name) for name in DEFERRED}
        package.__dict__.update(stand_ins)  # `from xmpp import transports` finds them
        try:
            for name in NEEDED:
                importlib.import_module("xmpp." + name)
        except BaseException:
            for name in ("xmpp",) + tuple("xmpp." + n for n in NEEDED):
                sys.modules.pop(name, None)
            raise
        finally:
            for name, stand_in in stand_ins.items():
                if package.__dict__.get(name) is stand_in:
                    del package.__dict__[name]
        package.__getattr__ = _package_getattr
        package.__dir__ = _package_dir
        _state["package"] = package
        return package


def complete():
    """Run xmpppy's ``__init__.py`` in the package :func:`load` made (once; nothing
    if it was not made by :func:`load`). Then ``xmpp`` is the whole package."""
    with _lock:
        package = _state["package"]
        if package is None or _state["complete"] or _state["loading"] is not None:
            return
        _state["loading"] = threading.get_ident()
        try:
            for name in DEFERRED:  # before `from .client import *` copies them
                client = sys.modules["xmpp.client"]
                stand_in = client.__dict__.get(name)
                if isinstance(stand_in, _Deferred):
                    stand_in._resolve()
            package.__spec__.loader.exec_module(package)
        finally:
            _state["loading"] = None
        _state["complete"] = True
        for name in ("__getattr__", "__dir__"):
            if package.__dict__.get(name) in (_package_getattr, _package_dir):
                del package.__dict__[name]


def _package_getattr(name: str):
    """``xmpp.<name>`` for a name not there yet: complete the package first."""
    if _state["loading"] == threading.get_ident():
        # __init__.py running in this thread asks (hasattr) before importing a submodule
        raise AttributeError("module 'xmpp' has no attribute %r" % name)
    package = _state["package"]
    complete()
    try:
        return package.__dict__[name]
    except (KeyError, AttributeError):
        raise AttributeError("module 'xmpp' has no attribute %r" % name) from None


def _package_dir():
    package = _state["package"]
    complete()
    return sorted(package.__dict__)


load()
