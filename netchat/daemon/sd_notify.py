"""Telling systemd how a daemon is doing (``sd_notify``), without a dependency.

A service started with ``Type=notify`` finds ``$NOTIFY_SOCKET`` in its environment:
a unix datagram socket (a path, or an abstract name written with a leading ``@``)
that takes ``KEY=VALUE`` lines, one datagram per notification.
:func:`netchat.daemon.runner.serve_forever` (so ``Daemon.run`` and ``netchat run``) sends:

- ``READY=1`` once the daemon is connected and about to take requests;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` (``WatchdogSec=``) while its loop
  turns: the loop wakes up for it when nothing arrives. It goes on while a lost link
  is being retried (the loop is alive, waiting for the server: systemd's watchdog is
  about a stuck process, a server that is down is not a reason to kill the daemon;
  ``--retry`` decides how long to wait for it). It stops when the loop is stuck: a
  handler running inline (``threads=0``) longer than ``WatchdogSec`` gets the daemon
  restarted, as does a connection attempt longer than it (``connect_timeout``);
- ``STATUS=...`` lines when the link is lost, and when it is back;
- ``STOPPING=1`` when the daemon closes (SIGTERM, Ctrl-C, ``close()``, a master gone).

Without ``$NOTIFY_SOCKET`` nothing is sent and nothing costs anything. A notification
that cannot be sent is logged once, never raised: the daemon goes on.
"""

import logging
import os
import socket
import time
from typing import Mapping, Optional

log = logging.getLogger(__name__)

__all__ = ["Notifier", "from_environment", "socket_address", "watchdog_interval"]


def socket_address(value: str) -> str:
    """The address of ``$NOTIFY_SOCKET``: a path, or an abstract socket name (a
    leading ``@`` stands for the NUL byte such names begin with)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    return value


def watchdog_interval(environ: Mapping[str, str]) -> Optional[float]:
    """Seconds between two ``WATCHDOG=1``: half ``$WATCHDOG_USEC``; None when systemd
    asked for no watchdog, or asked another process (``$WATCHDOG_PID``)."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    return value / 2e6 if value > 0 else None


class Notifier:
    """Sends notifications to one ``$NOTIFY_SOCKET`` address (see the module)."""

    def __init__(self, address: str, interval: Optional[float] = None):
        self.address = socket_address(address)
        #: Seconds between two ``WATCHDOG=1`` (None: no watchdog).
        self.interval = interval
        self.next_watchdog = 0.0
        self.stopping_sent = False
        self._failed = False
        self._sock: Optional[socket.socket] = None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=VALUE`` each) as one datagram; False when it could
        not be sent (logged the first time)."""
        data = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"),
                            exc)
            return False
        return True

    def ready(self, status: Optional[str] = None) -> bool:
        """``READY=1`` (with a ``STATUS=`` line); the watchdog starts from here."""
        self.next_watchdog = time.monotonic() + (self.interval or 0.0)
        return self.notify("READY=1", *status_lines(status))

    def status(self, text: str) -> bool:
        """One ``STATUS=`` line (what ``systemctl status`` shows)."""
        return self.notify(*status_lines(text))

    def stopping(self, status: Optional[str] = None) -> bool:
        """``STOPPING=1``, once."""
        if self.stopping_sent:
            return True
        self.stopping_sent = True
        return self.notify("STOPPING=1", *status_lines(status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1`` when it is due (every :attr:`interval`); True when sent."""
        if self.interval is None or self.stopping_sent:
            return False
        now = time.monotonic()
        if now < self.next_watchdog:
            return False
        self.next_watchdog = now + self.interval
        return self.notify("WATCHDOG=1")

    def timeout(self) -> Optional[float]:
        """How long the loop may wait before the next ``WATCHDOG=1`` is due (None:
        no watchdog, wait as long as it likes)."""
        if self.interval is None:
            return None
        return max(0.0, self.next_watchdog - time.monotonic())

    def sleep(self, seconds: float):
        """``time.sleep(seconds)``, sending ``WATCHDOG=1`` meanwhile when due."""
        end = time.monotonic() + seconds
        while True:
            self.watchdog()
            left = end - time.monotonic()
            if left <= 0:
                return
            wait = self.timeout()
            time.sleep(left if wait is None else min(left, max(wait, 0.001)))

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def status_lines(text: Optional[str]):
    """A ``STATUS=`` line for ``text`` (on one line), or none."""
    if not text:
        return ()
    return ("STATUS=" + " ".join(str(text).split()),)


def from_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[Notifier]:
    """A :class:`Notifier` for ``$NOTIFY_SOCKET``, or None when it is not set (the
    process was not started by systemd with ``Type=notify``)."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    if not (address.startswith("/") or address.startswith("@")):
        log.warning("ignoring NOTIFY_SOCKET=%r: neither a path nor an abstract socket "
                    "name (@...)", address)
        return None
    return Notifier(address, watchdog_interval(environ))
