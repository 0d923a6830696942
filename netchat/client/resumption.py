"""Bringing a connection back after a lost link: a fresh session, or its XEP-0198
session resumed.

When a link dies, what waits on it does not fail: requests in ``request()`` and
transactions wait while the connection reconnects, for at most ``resume_timeout``
seconds; then their copies go out on the new session (:mod:`netchat.client.redelivery`).
With stream management on (:mod:`netchat.xmpp.smacks`) the lost session is resumed
while the server keeps it (its ``max``), and stanzas handed over meanwhile are kept
for it. :meth:`Resumer.attempt` is one try (the first at once, then after pauses
growing from 0.5 s to :data:`ATTEMPT_GAP_MAX`); the connection calls it from
:meth:`~netchat.Connection.process` and, when no thread is in ``process()``, from a
thread waiting for a reply. :meth:`netchat.Daemon.serve_forever` reconnects with its
own backoff. A server that refused us (a stream error such as ``conflict``: another
login took the resource) is not tried again. Once the time is up, or the server
refuses the login, waiting requests fail with :class:`~netchat.errors.Disconnected`.
"""

import logging
import time
from typing import Optional

from xmpp.simplexml import Node

from ..errors import AuthError, ConnectError
from ..xmpp.parser import NS_PING, make_iq, stanza_text

log = logging.getLogger(__name__)

__all__ = ["Resumer", "RESTART_AFTER", "RECONNECT_AFTER", "ended_for_restart",
           "ATTEMPT_GAP_MAX"]

#: Stream errors after which a server still wants us back (without one: the link
#: broke, or the server closed its stream, as a restarting server does).
RECONNECT_AFTER = (None, "system-shutdown", "connection-timeout", "reset",
                   "internal-server-error", "not-well-formed", "remote-connection-failed",
                   "resource-constraint", "no-acknowledgement")
#: Longest pause between two tries at bringing a link back.
ATTEMPT_GAP_MAX = 3.5

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


def wants_us_back(condition: Optional[str], text: str) -> bool:
    """May a client whose stream ended this way log in again at once? Not after a
    stream error that says we are not wanted (``conflict``, ``not-authorized``,
    ``host-unknown``, a ``policy-violation`` other than too many unacknowledged
    stanzas...)."""
    return condition in RECONNECT_AFTER or ended_for_restart(condition, text)


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
        #: Links brought back so far, and links lost (not closed by us).
        self.recovered = 0
        self.losses = 0
        #: When the next try may start (``time.monotonic()``), and the pause after it.
        self.next_try = 0.0
        self._gap = 0.5
        #: Nothing is brought back: never connected yet, or given up (a connect
        #: clears it).
        self.stopped = True
        #: The connection was closed (an explicit connect clears it), and how often.
        self.closed = False
        self.closes = 0
        #: True while :meth:`attempt` connects (a connect of its own, not the user's).
        self.attempting = False

    def stop(self):
        """The connection is closed: a lost link stays lost."""
        self.closed = True
        self.closes += 1
        with self.conn.stream.cond:
            self.conn.stream.cond.notify_all()

    def possible(self) -> bool:
        """Would the link be brought back if it were lost now?"""
        stream = self.conn.stream
        sm = stream.sm
        if self.stopped or self.closed or stream.closing or not self.timeout:
            return False
        if self.restart or (sm is not None and sm.restarting):  # a fresh session owed
            return True
        if sm is not None and sm.resumable and not stream.ended_by_server:
            return True
        return wants_us_back(stream.error_condition, stream.error_text)

    def connected(self):
        """A connect succeeded (whoever called it): nothing is pending any more."""
        if self.since is not None or self.restart:
            self.recovered += 1
        self.stopped = False
        self.since = None
        self.restart = False
        self.next_try = 0.0
        self._gap = 0.5

    @property
    def pending(self) -> bool:
        """Is a lost link waiting to be resumed? (True from the moment it died: no
        thread sees it dead and not yet waiting.)"""
        return self.conn.stream.dead is not None and self.possible()

    def plan_recovery(self, reason: str) -> bool:
        """The link died: True when it will be resumed (nothing fails yet)."""
        stream = self.conn.stream
        if not (self.closed or stream.closing):
            self.losses += 1
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
        log.info("will bring the link to %s back (%s)", self.conn.where, reason)
        return True

    def attempt(self) -> bool:
        """One try at bringing the link back (a thread that is not inside a handler);
        True when the link is up."""
        stream = self.conn.stream
        if not self.pending:
            return stream.dead is None
        now = time.monotonic()
        if now < self.next_try:
            return False
        if not stream.try_enter():
            return False
        try:
            if stream.dead is None:
                return True
            closes = self.closes
            try:
                self.attempting = True
                try:
                    self.conn.connect()
                finally:
                    self.attempting = False
                if self.closes != closes:  # closed meanwhile: it must not come back
                    stream.expect_close()
                    stream.goodbye(1.0)
                    stream.release_socket("closed")
                    return False
            except AuthError as exc:
                self.give_up("the server refused the login: %s" % exc)
                return False
            except ConnectError as exc:
                self.next_try = time.monotonic() + self._gap
                self._gap = min(self._gap * 2, ATTEMPT_GAP_MAX)
                if self.since is None:
                    self.since = time.monotonic()
                if time.monotonic() - self.since >= self.timeout:
                    self.give_up("could not resume within %.0fs: %s" % (self.timeout,
                                                                         exc))
                else:
                    log.info("resuming the session on %s failed: %s", self.conn.where,
                             exc)
                return False
            if stream.dead is not None:  # lost again while setting up (see plan_recovery())
                return False
            with stream.cond:
                stream.cond.notify_all()
            return True
        finally:
            stream.leave()

    def prove(self, deadline: float) -> bool:
        """Prove a resumed session with a round trip (a ping to the server): a
        server may keep feeding the resumed link into the lost one's parser, where
        half a stanza swallows everything that follows (Prosody 0.12). No answer
        within ``ping_timeout`` (at most 5 s) ends the link so that a fresh session
        is started (see :data:`RESTART_AFTER`)."""
        conn = self.conn
        stream = conn.stream
        ping_id = "resumed-%s" % conn.new_id()
        ping = make_iq("get", Node("ping", attrs={"xmlns": NS_PING}), to=conn.domain,
                       id=ping_id)
        stream.send_bytes(stanza_text(ping).encode("utf-8"))
        patience = min(deadline, time.monotonic() + min(5.0, stream.keepalive.timeout))
        try:
            stream.await_element(lambda n: n.getName() == "iq" and
                                 n.getAttr("id") == ping_id, patience,
                                 "the answer to a ping on the resumed session")
            return True
        except ConnectError as exc:
            log.warning("the resumed session on %s does not answer (%s): starting a "
                        "fresh one", conn.where, exc)
            stream.mark_dead("the resumed session does not answer", "no-acknowledgement")
            return False

    def give_up(self, reason: str):
        """Stop waiting: fail what waits, forget the session (until the next explicit
        :meth:`netchat.Connection.connect`)."""
        self.stopped = True
        self.since = None
        self.restart = False
        sm = self.conn.stream.sm
        if sm is not None:
            sm.reset()
        log.warning("connection to %s lost for good: %s", self.conn.where, reason)
        self.conn.transactions.fail_all(reason, self.conn.where)
