"""Small tools for tests and throwaway servers: errors, free ports, waiting with a
deadline, and the parent-death signal for server processes."""

import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = ["Account", "ServerNotInstalled", "ProsodyNotFound", "EjabberdNotFound",
           "ServerStartError", "free_port", "wait_for", "child_preexec"]


class ServerNotInstalled(RuntimeError):
    """The server's software is not installed; the message says how to install it."""


class ProsodyNotFound(ServerNotInstalled):
    """The ``prosody`` executable is not installed."""


class EjabberdNotFound(ServerNotInstalled):
    """``erl`` or ejabberd's Erlang application is not installed."""


class ServerStartError(RuntimeError):
    """The server did not come up; the message names its log file.

    ``directory`` is where the log and configuration were kept for inspection.
    """
    directory: Optional[str] = None


def free_port(host: str = "127.0.0.1", avoid=()) -> int:
    """Return a TCP port that is free on ``host`` right now (and not in ``avoid``:
    the system may hand out the same free port twice in a row)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def wait_for(condition, timeout: float, interval: float = 0.01,
             message: str = "condition"):
    """Poll ``condition()`` until it returns a true value, and return that value.

    Raises ``AssertionError`` naming ``message`` when ``timeout`` seconds pass first.
    This is the deadline-based wait tests use instead of fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, message))
        time.sleep(interval)


def _die_with_parent():
    # Runs in the child between fork and exec: ask Linux to SIGTERM the server when
    # its parent dies, so a crashed test run leaves nothing behind. Linux means the
    # parent *thread*: only used when the main thread starts the server (see child_preexec).
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def child_preexec() -> Optional[Callable[[], None]]:
    """The parent-death signal, when this thread may arm it (the main thread)."""
    if sys.platform.startswith("linux") and \
            threading.current_thread() is threading.main_thread():
        return _die_with_parent
    return None


@dataclass
class Account:
    """An account made by :meth:`netchat.testing.ThrowawayServer.account` or the ``xmpp_account``
    fixture."""
    user: str
    jid: str
    password: str
    connection_options: dict = field(default_factory=dict)

    @property
    def bare(self) -> str:
        return self.jid.split("/", 1)[0]
