"""Bringing a connection back after a lost link, resuming its XEP-0198 session.

When a link dies while stream management is on with resumption
(:mod:`netchat.xmpp.smacks`), what waits on it does not fail: requests in
``request()``, transactions and stanzas handed over meanwhile wait while the
connection reconnects and resumes, as long as the server keeps the session (its
``max``) and at most ``resume_timeout`` seconds. :meth:`Resumer.attempt` is one try;
the connection calls it from :meth:`~netchat.Connection.process` and, when no thread
is in ``process()``, from a thread waiting for a reply. When the server forgot the
session, the connection starts a fresh one and sends the unacknowledged messages
again. Once the time is up, or the server refuses the login, waiting requests fail
with :class:`~netchat.errors.Disconnected` as they would without stream management.
"""

import logging
import time
from typing import Optional

from .errors import AuthError, ConnectError

log = logging.getLogger("netchat.jabber")

__all__ = ["Resumer", "RESTART_AFTER", "ended_for_restart"]

#: Stream errors after which a fresh session (with the unacknowledged messages sent
#: again) is right: the server's parser or code broke, not our standing with it.
#: Prosody 0.12 feeds a resumed connection into the XML parser of the lost one, which
#: may hold half a stanza: it then ends the resumed stream as not-well-formed.
#: The same when the server acknowledges nothing for ``ping_timeout`` seconds (the
#: other face of that bug: the lost half stanza swallows what follows, silently).
RESTART_AFTER = ("not-well-formed", "internal-server-error", "no-acknowledgement")


def ended_for_restart(condition: Optional[str], text: str) -> bool:
    """Did the server end the stream so that a fresh session is right? One of
    :data:`RESTART_AFTER`, or ejabberd's ``policy-violation`` "Too many unacked
    stanzas": the client fell 5000 stanzas behind (its queue of stanzas kept for
    us is full; it bounces them, so open requests are asked again)."""
    return condition in RESTART_AFTER or (
        condition == "policy-violation" and "unacked" in text.lower())


class Resumer:
    """The resumption of one connection's lost links (see the module).

    ``conn`` is a :class:`~netchat.Connection`: its public ``stream``, ``connect``,
    ``transactions`` and ``where``.
    """

    def __init__(self, conn, timeout: float = 60.0):
        self.conn = conn
        #: The longest a lost link is waited for (the server's limit may be shorter).
        self.timeout = timeout
        self.since: Optional[float] = None
        #: The session is gone, but a fresh one may take its messages over.
        self.restart = False
        #: Links brought back so far.
        self.recovered = 0

    def possible(self) -> bool:
        """Could the session be resumed if the link were lost now?"""
        stream = self.conn.stream
        sm = stream.sm
        if sm is None or stream.closing or not self.timeout:
            return False
        if self.restart or sm.restarting:  # a fresh session is still owed
            return True
        return sm.resumable and not stream.ended_by_server

    @property
    def pending(self) -> bool:
        """Is a lost link waiting to be resumed? (True from the moment it died: no
        thread sees it dead and not yet waiting.)"""
        return self.conn.stream.dead is not None and self.possible()

    def lost(self, reason: str) -> bool:
        """The link died: True when it will be resumed (nothing fails yet)."""
        stream = self.conn.stream
        sm = stream.sm
        if sm is not None and sm.resumable and not stream.closing and \
                ended_for_restart(stream.error_condition, stream.error_text):
            log.warning("the server ended the session (%s): starting a fresh one",
                        stream.error_condition)
            sm.failed(None)
            self.restart = True
        if not self.possible():
            log.debug("not resuming %s: stream management %s, closing %s, ended by the "
                      "server %s", self.conn.where,
                      "resumable" if sm is not None and sm.resumable else "off",
                      stream.closing, stream.ended_by_server)
            self.since = None
            return False
        self.since = time.monotonic()
        log.info("will resume the session on %s (%s)", self.conn.where, reason)
        return True

    def _window(self) -> float:
        sm = self.conn.stream.sm
        limit = sm.resume_max if sm is not None and sm.resume_max else self.timeout
        return min(self.timeout, limit)

    def attempt(self) -> bool:
        """One try at bringing the link back (a thread that is not inside a handler);
        True when the link is up."""
        stream = self.conn.stream
        if not self.pending:
            return stream.dead is None
        if not stream.try_enter():
            return False
        try:
            if stream.dead is None:
                return True
            saved = list(stream.inbox)  # parsed before the link died: still to handle
            try:
                self.conn.connect()
            except AuthError as exc:
                self.give_up("the server refused the login: %s" % exc)
                return False
            except ConnectError as exc:
                if self.since is None:
                    self.since = time.monotonic()
                if time.monotonic() - self.since >= self._window():
                    self.give_up("could not resume within %.0fs: %s" % (self._window(),
                                                                         exc))
                else:
                    log.info("resuming the session on %s failed: %s", self.conn.where,
                             exc)
                return False
            stream.inbox.extendleft(reversed(saved))
            if stream.dead is not None:  # lost again while setting up (see lost())
                return False
            self.since = None
            self.restart = False
            self.recovered += 1
            with stream.cond:
                stream.cond.notify_all()
            return True
        finally:
            stream.leave()

    def give_up(self, reason: str):
        """Stop waiting: fail what waits, forget the session."""
        self.since = None
        self.restart = False
        sm = self.conn.stream.sm
        if sm is not None:
            sm.reset()
        log.warning("connection to %s lost for good: %s", self.conn.where, reason)
        self.conn.transactions.fail_all(reason, self.conn.where)
