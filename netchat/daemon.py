"""The Daemon: netchat's port of Net::Chat::Daemon.

Subclass :class:`Daemon`, define ``handleXxx`` methods (or pass ``commands``), and run
it. Each chat message is a request: its body is split into a command and arguments
(:mod:`netchat.commands`), attachments are appended as :class:`~netchat.Attachment`
arguments, the handler runs, and its return value goes back as the reply. See
README.rst for a porting table from the Perl module.
"""

import datetime
import itertools
import logging
import random
import signal
import sys
import threading
import time
import traceback
import unicodedata
from typing import Any, Callable, Dict, Iterable, List, Optional

from xmpp.protocol import Message, Presence

from .access import AccessPolicy
from .attachments import AttachmentError, parse_attachments
from .commands import (ParseError, command_names, find_handler, help_for, parse_body,
                       resolve, same_handler)
from .errors import AuthError, CommandError, ConnectError, Disconnected, Timeout
from .jabber import Connection, Reply, bare_jid, normalize_jid, parse_user
from .pool import WorkerPool
from .services import Services
from .wire import ALLHERE_SUBJECT, delay_stamp, is_automatic, reply_xml

log = logging.getLogger(__name__)
#: One line per request handled or refused: who, command, result.
audit = logging.getLogger("netchat.audit")

__all__ = ["Daemon"]

CALLBACK_TYPES = ("message", "available", "unavailable", "error")

#: Connection options a Daemon passes on to :class:`~netchat.jabber.Connection`.
CONNECTION_OPTIONS = ("host", "port", "resource", "ca_file", "ca_path", "verify",
                      "direct_tls", "require_tls", "register", "connect_timeout",
                      "ping_interval", "ping_timeout", "password")

RETRY_GAP = 1.5      # first pause between reconnection attempts (Perl's $RETRY_GAP)
RETRY_GAP_MAX = 3.5    # so a daemon is back within ~5 s of its server's return
NUDGE_INTERVAL = 0.5  # Perl's $PATIENCE in waitUntilAllHere
PRESENCE_ANSWERED_MAX = 10000  # peers remembered as answered, before forgetting them all
#: Subscription requests approved per session: each approval adds an entry to the
#: daemon's roster on the server (a write the server pays for); past this they are
#: declined, and the peer still sees the daemon through directed presence.
SUBSCRIPTIONS_MAX = 200

#: Default caps on what one request may carry.
MAX_BODY = 64 * 1024          # characters
MAX_ARGS = 256                # words and attachments
MAX_ATTACHMENT = 1024 * 1024  # bytes (decoded) per attachment
#: Largest reply stanza, in bytes of UTF-8 XML: under the 256 KiB (262,144 bytes) that
#: Prosody and ejabberd's usual configuration allow a client's stanza.
MAX_REPLY = 250000
AUDIT_FIELD_MAX = 100         # characters of a command name in an audit line


def _perl_loglevel(level: int) -> int:
    """Perl's loglevel (messages with a level above it were hidden) -> logging level."""
    if level < 0:
        return logging.WARNING
    if level == 0:
        return logging.INFO
    return logging.DEBUG


class Daemon:
    """A daemon controlled through instant messages (Perl: Net::Chat::Daemon).

    :param user: ``jabber://user@host/resource``, ``xmpp://...`` or
        ``user@host[/resource]``. Another scheme raises ``ValueError``.
    :param password: the account's password.
    :param connection_options: options of :class:`~netchat.jabber.Connection`
        (``host``, ``port``, ``ca_file``, ``register``, ...).
    :param commands: command name -> method name (a string) or callable. A callable
        gets the command's arguments only.
    :param help: command name -> help text.
    :param master: a JID or user id. The daemon exits (status 0) when a master it saw
        available goes away.
    :param loglevel: Perl-style verbosity (-1 warnings, 0 info, 1+ debug) for the
        ``netchat`` loggers; None leaves logging alone.
    :param threads: run handlers on a pool of this many threads (0: inline in
        :meth:`process`, as Perl did). Only the thread owning the connection writes to
        it; workers hand their replies over through the connection's queue.
    :param max_pending: with ``threads``, how many requests may wait for a free worker
        (default ``max(100, 10 * threads)``); beyond that a request is answered "busy"
        at once.
    :param shutdown_grace: seconds :meth:`close` gives running handlers (default 10).
    :param allow: JID patterns (see :mod:`netchat.access`) allowed to command the
        daemon and see its presence. Default: the daemon's own domain, plus ``master``;
        ``"*"`` for anyone.
    :param acl: command -> JID patterns, replacing ``allow`` for that command.
    :param max_body: longest request body, in characters (default 64 KiB).
    :param max_args: most arguments (words and attachments) per request (default 256).
    :param max_attachment: largest attachment, in bytes once decoded (default 1 MiB).
    :param max_age: seconds; a request the server stored while the daemon was away
        (it carries a delay stamp) that is older is answered "expired" and not run.
        Default None: run it, as the Perl module did.
    :param max_reply: largest reply stanza in bytes (UTF-8 XML as sent, default
        250,000: servers close the stream of a client sending a stanza over their limit,
        256 KiB by default for Prosody). A longer result is answered ``too-large``.

    Other keyword options are stored on the object as attributes, as in Perl.
    The constructor connects; failure raises :class:`~netchat.ConnectError` (or its
    subclasses :class:`~netchat.AuthError`, :class:`~netchat.TLSError`).
    """

    #: Reply to a command nobody handles (``%s``: the command).
    MSG_UNKNOWN_COMMAND = "unknown command '%s'; send 'help' for the list of commands"
    #: Reply to a request without a command.
    MSG_EMPTY_REQUEST = "empty request; send 'help' for the list of commands"
    #: Reply when the worker pool's backlog is full (``%d``: requests waiting).
    MSG_BUSY = "busy: %d requests are waiting; try again later"
    #: Reply to requests that arrive (or still wait) while the daemon shuts down.
    MSG_SHUTTING_DOWN = "busy: shutting down"
    #: Reply to a sender ``allow``/``acl`` does not allow.
    MSG_DENIED = "denied"
    #: Reply to a request over a cap (what, limit).
    MSG_TOO_LARGE = "too large: %s is over the limit of %s"
    #: Reply to a stored request older than ``max_age`` (age, max_age).
    MSG_EXPIRED = "expired: this request waited %.0fs on the server (max_age %gs)"
    #: Reply when a handler's result does not fit in a reply (size, max_reply).
    MSG_REPLY_TOO_LARGE = ("too large: the reply would be %d bytes, over the limit of %d "
                           "(max_reply); the command ran")
    #: Subscription requests approved per session (see :data:`SUBSCRIPTIONS_MAX`).
    SUBSCRIPTIONS_MAX = SUBSCRIPTIONS_MAX
    #: Reply when a handler's result cannot be turned into text (the exception).
    MSG_NO_TEXT = "error: the command ran, but its result cannot be turned into text: %s"

    def __init__(self, user: str, password: Optional[str] = None, *,
                 connection_options: Optional[Dict[str, Any]] = None,
                 commands: Optional[Dict[str, Any]] = None,
                 help: Optional[Dict[str, str]] = None,
                 master: Optional[str] = None, loglevel: Optional[int] = None,
                 threads: int = 0, max_pending: Optional[int] = None,
                 shutdown_grace: float = 10.0, allow: Any = None,
                 acl: Optional[Dict[str, Any]] = None, max_body: int = MAX_BODY,
                 max_args: int = MAX_ARGS, max_attachment: int = MAX_ATTACHMENT,
                 max_age: Optional[float] = None, max_reply: int = MAX_REPLY,
                 **options: Any):
        self.user = parse_user(user)
        for name, value in options.items():
            if hasattr(type(self), name) or name.startswith("_"):
                raise TypeError("option %r would hide the Daemon attribute of that name"
                                % name)
            setattr(self, name, value)
        self.commands: Dict[str, Any] = dict(commands or {})
        self.help: Dict[str, str] = dict(help or {})
        self.master = master
        self.threads = int(threads or 0)
        if self.threads < 0:
            raise ValueError("threads must be >= 0, not %r" % threads)
        self.max_pending = max(100, 10 * self.threads) if max_pending is None \
            else int(max_pending)
        self.shutdown_grace = shutdown_grace
        self.max_body, self.max_args = int(max_body), int(max_args)
        self.max_attachment = int(max_attachment)
        self.max_age = max_age
        self.max_reply = int(max_reply)
        self.loglevel = loglevel
        if loglevel is not None:
            self._configure_logging(loglevel)

        cxn_options = dict(connection_options or {})
        unknown = set(cxn_options) - set(CONNECTION_OPTIONS)
        if unknown:
            raise ValueError("unknown connection option(s) %s; known: %s"
                             % (", ".join(sorted(unknown)), ", ".join(CONNECTION_OPTIONS)))
        if password is None:
            password = cxn_options.pop("password", None)
        else:
            cxn_options.pop("password", None)

        self._callbacks: Dict[str, List[tuple]] = {t: [] for t in CALLBACK_TYPES}
        self._callback_ids = itertools.count(1)
        self._local = threading.local()
        self._presence_sent: set = set()
        self._master_seen = False
        self._subscriptions_approved = 0
        self._sync = None  # waitUntilAllHere's state while it runs
        self._pool: Optional[WorkerPool] = None
        self._accepting = True
        self._closed = False
        self._exit_request: Optional[BaseException] = None

        #: The connection (Perl: ``$self->{cxn}``).
        # the parser keeps no more text of one element than the largest body or
        # (base64, possibly line-wrapped) attachment a request may carry
        text_limit = max(self.max_body, (self.max_attachment * 4 // 3 + 4) * 78 // 76 + 64)
        self.cxn = Connection(self.user, password, handler=self, text_limit=text_limit,
                              **cxn_options)
        #: Who may do what (``allow`` and ``acl``).
        self.access = AccessPolicy(self.cxn.domain, allow, acl, master)
        self._services = Services(self)
        if master is not None:
            self.push_callback("unavailable", self.checkMaster, id="netchat:master")
        self.cxn.connect()
        if self.threads:
            self._pool = WorkerPool(self.threads, self.max_pending,
                                    on_exit=self._exit_from_worker)

    # -- construction helpers ---------------------------------------------------------

    @staticmethod
    def _configure_logging(loglevel: int):
        logger = logging.getLogger("netchat")
        logger.setLevel(_perl_loglevel(loglevel))
        if not logging.getLogger().handlers and not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(
                "%(asctime)s %(name)s %(levelname)s %(message)s"))
            logger.addHandler(handler)

    @property
    def connection(self) -> Connection:
        return self.cxn

    @property
    def jid(self) -> Optional[str]:
        """The full JID this daemon is logged in as."""
        return self.cxn.jid

    @property
    def last_message(self) -> Optional[Message]:
        """The request being handled (on the thread handling it), else None."""
        return getattr(self._local, "message", None)

    def __repr__(self):
        return "<%s %s>" % (type(self).__name__, self.cxn.jid or self.user)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- running -----------------------------------------------------------------------

    @classmethod
    def run(cls, user: str, retry: Optional[float] = None, **options: Any):
        """Create a daemon and loop forever (Perl: ``run``).

        Without ``retry`` a failed connection or a lost link ends the process with
        status 1 and a one-line error on stderr. ``retry=N`` reconnects (a fresh
        connection each time, pauses from 1.5 s growing to 3.5 s, jittered) for up to
        N seconds per outage, and also when the first connection fails; ``retry=0``
        retries forever. A refused login (:class:`~netchat.AuthError`: wrong password,
        refused registration) is never retried: status 1 at once. SIGTERM and Ctrl-C
        close the daemon cleanly and exit with status 0. Unless logging is configured,
        the ``netchat`` loggers write to stderr at ``loglevel`` (default -1: warnings
        and errors, handler tracebacks included), and ``run`` prints one line per
        event on stderr.
        """
        name = cls.__name__
        if options.get("loglevel") is None and not logging.getLogger().handlers \
                and not logging.getLogger("netchat").handlers:
            cls._configure_logging(-1)  # warnings and errors on stderr, as Perl printed

        def say(message: str):
            print("%s: %s" % (name, message), file=sys.stderr, flush=True)

        def fail(message: str):
            say(message)
            sys.exit(1)

        def terminate(signum, frame):
            raise KeyboardInterrupt
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, terminate)

        server = None
        try:
            try:
                try:
                    server = cls(user, **options)
                except ConnectError as exc:
                    if retry is None or isinstance(exc, AuthError):
                        raise
                    say("%s; retrying" % exc)
                    server = cls._backoff(retry, lambda: cls(user, **options))
                    if server is None:
                        fail("could not connect within %ss" % retry)
                server.serve_forever(retry, report=say)
            except AuthError as exc:
                fail("%s (not retried: check the account and its password)" % exc)
            except (ConnectError, Disconnected) as exc:
                fail(str(exc))
            sys.exit(0)  # closed by a handler or another thread
        except KeyboardInterrupt:
            if server is not None:
                server.close()
            sys.exit(0)

    @staticmethod
    def _backoff(retry: Optional[float], attempt: Callable[[], Any]) -> Any:
        """Call ``attempt`` until it does not raise ConnectError: pauses from 1.5 s,
        doubling up to 3.5 s, jittered, for up to ``retry`` seconds (0: forever).
        Returns its result, or None when time ran out."""
        deadline = None if not retry else time.monotonic() + retry
        gap = RETRY_GAP
        while True:
            pause = gap * random.uniform(0.8, 1.2)
            if deadline is not None and time.monotonic() + pause > deadline:
                return None
            time.sleep(pause)
            gap = min(gap * 2, RETRY_GAP_MAX)
            try:
                return attempt()
            except AuthError:
                raise  # a refused password stays refused: never hammer the server
            except ConnectError as exc:
                log.warning("connection attempt failed: %s", exc)

    def serve_forever(self, retry: Optional[float] = None,
                      report: Optional[Callable[[str], None]] = None):
        """Process until :meth:`close` is called, reconnecting when the link is lost.

        Without ``retry`` a lost link raises :class:`~netchat.Disconnected`; with
        ``retry=N`` a fresh connection is tried (pauses 1.5 s to 3.5 s, jittered) for
        up to N seconds per outage (0: forever) before raising. A refused login on
        reconnecting raises :class:`~netchat.AuthError` at once (never retried).
        ``report(line)`` hears about each outage (default: the log).
        """
        report = report or log.warning
        while not self._closed:
            while self.process() is not None:
                pass
            if self._closed:
                return
            reason = self.cxn._dead or "connection lost"
            if retry is None:
                raise Disconnected("lost the connection to %s: %s"
                                   % (self.cxn.where, reason))
            report("lost the connection to %s (%s); reconnecting"
                   % (self.cxn.where, reason))
            if not self._reconnect_with_retry(retry):
                raise Disconnected("could not reconnect to %s within %ss"
                                   % (self.cxn.where, retry))
            report("reconnected as %s" % self.jid)

    def _reconnect_with_retry(self, retry: Optional[float]) -> bool:
        """Reconnect with backoff for up to ``retry`` seconds (0: forever)."""
        return self._backoff(retry, lambda: self.reconnect() or True) is not None

    def reconnect(self):
        """A fresh connection: authenticate, presence, master watched again.

        Also reopens a daemon that was closed (its worker pool too)."""
        self.cxn.reconnect()
        if self._closed:
            self._closed = False
            self._accepting = True
            if self.threads:
                self._pool = WorkerPool(self.threads, self.max_pending,
                                        on_exit=self._exit_from_worker)

    def process(self, timeout: Optional[float] = None) -> Optional[int]:
        """Pump the connection for up to ``timeout`` seconds (None: until something
        arrives). Returns 1 when data was received, 0 when the link is fine but nothing
        came, None on error or disconnect. Never raises for network trouble.

        A handler that called ``sys.exit`` on a worker thread ends the process from
        here, on the loop thread, after :meth:`close`.
        """
        result = self.cxn.process(timeout)
        if self._exit_request is not None:
            exc, self._exit_request = self._exit_request, None
            self.close()
            raise exc
        return result

    def _exit_from_worker(self, exc: BaseException):
        self._exit_request = exc
        self.cxn.interrupt()

    def close(self, grace: Optional[float] = None):
        """Stop taking requests, give running handlers up to ``grace`` seconds
        (default ``shutdown_grace``) while their replies go out, then disconnect
        (unavailable presence, end of stream). Requests still queued are answered
        "busy". Calling it again does nothing.

        It returns within about ``grace`` plus a second, whatever the handlers do.
        Python cannot stop a thread: a handler still running after ``grace`` is left
        to finish on its own (its worker is a daemon thread; with ``threads=0``, the
        thread in :meth:`process`, which returns None afterwards), and its reply is
        dropped with a log line, because the connection is closed by then."""
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        grace = self.shutdown_grace if grace is None else grace
        if self._pool is not None:
            leftover = self._pool.shutdown(grace, pump=self._pump_while_closing)
            for job in leftover:
                job.respond(self.MSG_SHUTTING_DOWN, "busy")
            grace = 1.0  # the loop thread only needs to leave select
        self.cxn.close(grace=grace)

    def _pump_while_closing(self, seconds: float):
        return self.cxn.process(seconds) if self.cxn.connected else None

    # -- callbacks ---------------------------------------------------------------------

    def _check_type(self, type: str):
        if type not in CALLBACK_TYPES:
            raise ValueError("unknown callback type %r; types are %s"
                             % (type, ", ".join(CALLBACK_TYPES)))

    def _add_callback(self, type: str, callback: Callable, id: Any, first: bool) -> Any:
        self._check_type(type)
        if not callable(callback):
            raise TypeError("callback must be callable, not %r" % (callback,))
        if id is None:
            id = "cb-%d" % next(self._callback_ids)
        elif any(entry_id == id for entries in self._callbacks.values()
                 for entry_id, _ in entries):
            raise ValueError("callback id %r is already in use" % (id,))
        entries = self._callbacks[type]
        if first:
            entries.insert(0, (id, callback))
        else:
            entries.append((id, callback))
        return id

    def push_callback(self, type: str, callback: Callable, id: Any = None) -> Any:
        """Add ``callback(sid, stanza)`` for ``type`` (message, available, unavailable,
        error) after the others; returns its id. The first callback that returns a
        true value handles the event and stops the rest."""
        return self._add_callback(type, callback, id, first=False)

    def unshift_callback(self, type: str, callback: Callable, id: Any = None) -> Any:
        """Like :meth:`push_callback`, but before the others."""
        return self._add_callback(type, callback, id, first=True)

    def remove_callback(self, type: str, id: Any) -> bool:
        """Remove the callback with ``id``; True if there was one."""
        self._check_type(type)
        entries = self._callbacks[type]
        for index, (entry_id, _) in enumerate(entries):
            if entry_id == id:
                del entries[index]
                return True
        return False

    def _run_callbacks(self, type: str, stanza) -> bool:
        sid = self.cxn.stream_id
        for entry_id, callback in list(self._callbacks[type]):
            try:
                if callback(sid, stanza):
                    return True
            except (SystemExit, KeyboardInterrupt):
                raise
            except Exception:
                log.exception("%s callback %r failed", type, entry_id)
        return False

    # -- what the connection hands over (on the loop thread) ---------------------------

    def _nc_connected(self, conn: Connection):
        self._presence_sent = set()
        self._subscriptions_approved = 0
        if self.master is not None:
            master = self._master_jid()
            self.cxn.send_presence(master)
            self._presence_sent.add(bare_jid(master))
            self.cxn.subscribe(master)

    def _nc_message(self, conn: Connection, msg: Message):
        if self._run_callbacks("message", msg):
            return
        self.onMessage(msg)

    def _nc_reply(self, conn: Connection, msg: Message, thread: str):
        if self._run_callbacks("message", msg):
            return
        self.onReply(msg, thread)

    def _nc_error(self, conn: Connection, msg: Message, transaction):
        if self._run_callbacks("error", msg) or transaction is not None:
            return
        log.info("unnoticed error from %s: %s (%s)", msg.getFrom(), msg.getError(),
                 msg.getBody() or "")

    def _nc_presence(self, conn: Connection, presence: Presence):
        typ = presence.getType() or "available"
        sender = presence.getFrom()
        if typ == "available":
            self._answer_presence(sender)
            if self.master is not None and self._is_master(sender):
                self._master_seen = True
            self._run_callbacks("available", presence)
        elif typ == "unavailable":
            self._run_callbacks("unavailable", presence)
        elif typ == "subscribe":
            self._answer_subscription(sender)
        elif typ == "error":
            self._run_callbacks("error", presence)

    def _nc_iq(self, conn: Connection, iq) -> bool:
        # disco, ad-hoc commands and version, for peers that may command us; the
        # others get service-unavailable, as for any iq nobody answers
        if not self.access.may_command(iq.getFrom()):
            return False
        return self._services.handle(iq)

    def _answer_subscription(self, sender):
        """Approve a subscription request from a peer that may see our presence, up
        to :data:`SUBSCRIPTIONS_MAX` per session (each approval grows the roster the
        server keeps for us); decline the others. A peer that may see our presence is
        also answered with directed presence, which is all a coordinator needs."""
        allowed = self._may_see_presence(sender)
        limit = self.SUBSCRIPTIONS_MAX
        approve = allowed and self._subscriptions_approved < limit
        if approve:
            self._subscriptions_approved += 1
        elif allowed and self._subscriptions_approved == limit:
            log.warning("[%s] %d subscriptions approved this session: declining the "
                        "next ones (directed presence still answers them)", self.jid,
                        limit)
            self._subscriptions_approved += 1
        self.cxn.send_presence(bare_jid(sender), "subscribed" if approve
                               else "unsubscribed")
        log.info("%s subscription request from %s", "approved" if approve else
                 "declined" if allowed else "refused", bare_jid(sender))
        if allowed and not approve:
            self._answer_presence(sender)

    def _answer_presence(self, sender):
        """Answer directed presence with directed presence, once per peer and session
        (so that two daemons never ping-pong), to peers allowed to see it."""
        full = normalize_jid(sender)
        bare = bare_jid(sender)
        if not full or bare == bare_jid(self.cxn.bare_jid):
            return
        if full in self._presence_sent or bare in self._presence_sent:
            return
        if not self._may_see_presence(sender):
            return
        if len(self._presence_sent) >= PRESENCE_ANSWERED_MAX:
            self._presence_sent.clear()  # bounded: at worst a peer is answered again
        self._presence_sent.add(full)
        try:
            self.cxn.send_presence(str(sender))
        except Disconnected:
            pass

    def _may_see_presence(self, jid) -> bool:
        """Who may see this daemon's presence: its master and whoever may command it."""
        if self.master is not None and self._is_master(jid):
            return True
        return self.access.may_command(jid)

    # -- messages (Perl API) -----------------------------------------------------------

    def onMessage(self, msg: Message, **extra):
        """Called for every message that is not a reply to this side's request.
        The default runs it as a request (:meth:`onRequest`)."""
        return self.onRequest(msg, **extra)

    def onReply(self, msg: Message, thread: str, **extra):
        """Called for a reply to a request sent without an ``onReply`` callback.
        The default hands it to :meth:`onMessage` (which never runs a reply)."""
        return self.onMessage(msg, reply_to=thread, **extra)

    def onRequest(self, msg: Message, **extra):
        """Run a request: check it, parse it, find the handler, call it, reply.

        Returns True when it answered. Messages that must never be answered (error
        stanzas, replies, ``allhere`` greetings), messages without a body (chat
        states) and group chat or headline messages are only logged. A request from
        someone not allowed (``allow``, ``acl``) is answered "denied", one over a cap
        (``max_body``, ``max_args``, ``max_attachment``) "too-large", one older than
        ``max_age`` "expired": its handler never runs.
        """
        if extra.get("reply_to") or is_automatic(msg):
            log.debug("not running %s from %s (a reply or greeting): %s",
                      msg.getType() or "message", msg.getFrom(), msg.getBody())
            return None
        if msg.getType() in ("groupchat", "headline"):
            return None
        body = msg.getBody()
        if body is None:
            return None  # a chat state or receipt: nothing to run
        sender = msg.getFrom()
        log.debug("[%s] from(%s): %.200s", self.jid, sender, body)
        refusal = self._refuse_sender(sender, len(body), getattr(msg, "truncated", None))
        if refusal is not None:
            return self._reply(msg, refusal[1], refusal[0], command=self._first_word(body))
        if self.max_age is not None:
            stamp = delay_stamp(msg)
            if stamp is not None:
                age = (datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()
                if age > self.max_age:
                    return self._reply(msg, self.MSG_EXPIRED % (age, self.max_age),
                                       "expired", command=self._first_word(body))
        try:
            command, args = parse_body(body)
        except ParseError as exc:
            return self._reply(msg, "error: %s" % exc, "error",
                               command=self._first_word(body))
        if command is None:
            return self._reply(msg, self.MSG_EMPTY_REQUEST, "unknown", command="-")
        found = self.command_for(command)
        name = found[0] if found is not None else command
        if not self.may_run(sender, name):
            return self._reply(msg, self.MSG_DENIED, "denied", command=name)
        try:
            attachments = parse_attachments(msg)
        except AttachmentError as exc:
            return self._reply(msg, "error: %s" % exc, "error", command=name)
        refusal = self._refuse_command(sender, name, len(args), attachments)
        if refusal is not None:
            return self._reply(msg, refusal[1], refusal[0], command=name)
        args.extend(attachments)
        return self._dispatch(name, args, msg, lambda text, status: self._reply(
            msg, text, status, command=name))

    def command_for(self, name: str) -> Optional[tuple]:
        """``(canonical name, handler)`` of the command a request names, or None when
        nothing handles it. Every spelling that reaches a handler (``Save`` reaches
        ``handleSave``) has one canonical name (``save``): the one ``acl``, audit lines
        and ad-hoc command nodes use (see :mod:`netchat.commands`)."""
        return resolve(self, self.commands, name)

    def may_run(self, jid, name: str) -> bool:
        """May ``jid`` run command ``name`` (any spelling)? Decided on the handler that
        would run: the ``acl`` entry of its canonical name; else the entries of every
        other name of that same handler (all must allow ``jid``); else ``allow``."""
        found = self.command_for(name)
        if found is None:
            return self.access.may_run(jid, name)
        canonical, handler = found
        aliases = []
        if canonical not in self.access.acl:
            for other in self.access.acl:
                match = self.command_for(other)
                if match is not None and same_handler(match[1], handler):
                    aliases.append(other)
        return self.access.may_run(jid, canonical, aliases)

    @staticmethod
    def _first_word(body: str) -> str:
        """The command of a request that was refused before it was parsed."""
        words = body.split(None, 1)
        return words[0] if words else "-"

    def _refuse_sender(self, sender, size: int, truncated: Optional[str] = None
                       ) -> Optional[tuple]:
        """(status, text) when ``sender`` may not command us or sent too much."""
        if not self.access.may_command(sender):
            return "denied", self.MSG_DENIED
        if size > self.max_body or truncated == "body":
            return "too-large", self.MSG_TOO_LARGE % (
                "the request", "%d characters" % self.max_body)
        if truncated:
            return "too-large", self.MSG_TOO_LARGE % (
                "an attachment", "%d bytes" % self.max_attachment)
        return None

    def _refuse_command(self, sender, command: str, nargs: int,
                        attachments: list) -> Optional[tuple]:
        """(status, text) when ``sender`` may not run ``command`` with these arguments."""
        if not self.may_run(sender, command):
            return "denied", self.MSG_DENIED
        if nargs + len(attachments) > self.max_args:
            return "too-large", self.MSG_TOO_LARGE % (
                "the request", "%d arguments" % self.max_args)
        for index, attachment in enumerate(attachments, 1):
            if len(attachment.data) > self.max_attachment:
                return "too-large", self.MSG_TOO_LARGE % (
                    "attachment %d" % index, "%d bytes" % self.max_attachment)
        return None

    def _dispatch(self, command: str, args: list, request,
                  respond: Callable[[str, str], Any]):
        """Find and run the handler (inline, or on the pool) and ``respond(text,
        status)`` with the outcome, on whichever thread ran it."""
        handler = self.getHandler(command)
        if handler is None:
            return respond(self.MSG_UNKNOWN_COMMAND % command, "unknown")
        if self._pool is not None and command != "help":
            if not self._accepting:
                return respond(self.MSG_SHUTTING_DOWN, "busy")
            if not self._pool.submit(_Job(self, handler, command, args, request, respond)):
                return respond(self.MSG_BUSY % self._pool.pending, "busy")
            return True
        return respond(*self._call_handler(handler, command, args, request))

    def _call_handler(self, handler: Callable, command: str, args: list, msg):
        """Run a handler: ``(reply text, status)``, whatever it returns or raises."""
        self._local.message = msg
        try:
            result = handler(*args)
        except CommandError as exc:
            return self._text_of(exc, "error")
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            log.error("[%s] command %r from %s failed:\n%s", self.jid, command,
                      msg.getFrom(), traceback.format_exc().rstrip())
            return self._text_of(exc, "error", "error: %s: " % type(exc).__name__)
        finally:
            self._local.message = None
        if result is None:
            return "", "ok"
        return self._text_of(result, "ok")

    def _text_of(self, value: Any, status: str, prefix: str = "") -> tuple:
        """``(prefix + value as text, status)``; an error reply when ``value`` cannot
        become text (its ``__str__`` raises or returns something else)."""
        try:
            if isinstance(value, bytes):
                text = value.decode("utf-8", "backslashreplace")
            else:
                text = str(value)
                if not isinstance(text, str):
                    raise TypeError("__str__ returned %s" % type(text).__name__)
            return prefix + text, status
        except Exception as exc:
            log.error("[%s] a result of type %s cannot become text: %r", self.jid,
                      type(value).__name__, exc)
            return self.MSG_NO_TEXT % ("%s: %s" % (type(exc).__name__, exc)), "error"

    def _reply(self, msg: Message, body: str, status: str,
               command: Optional[str] = None) -> bool:
        """Send the reply to ``msg`` (any thread), a ``too-large`` one when it would be
        over ``max_reply``; with ``command``, audit it."""
        xml = reply_xml(msg, body, status)
        data = None
        if len(xml) * 4 > self.max_reply:  # else it fits whatever its characters
            data = xml.encode("utf-8")
            if len(data) > self.max_reply:
                log.warning("[%s] a reply of %d bytes to %s is over max_reply (%d)",
                            self.jid, len(data), msg.getFrom(), self.max_reply)
                status = "too-large"
                xml, data = reply_xml(msg, self.MSG_REPLY_TOO_LARGE % (
                    len(data), self.max_reply), status), None
        if command is not None:
            self._audit(msg.getFrom(), command, status)
        try:
            self.cxn.send_xml(data if data is not None else xml, flush=False)
        except Disconnected as exc:
            log.warning("[%s] reply to %s lost: %s", self.jid, msg.getFrom(), exc)
            return False
        return True

    def _audit(self, sender, command: str, status: str, via: str = "chat"):
        """One line on the ``netchat.audit`` logger: who, command, result. What a peer
        chose (the command, the resource) is escaped: no control or invisible
        character, no space, no forged ``key=value``."""
        level = logging.WARNING if status == "denied" else logging.INFO
        if audit.isEnabledFor(level):
            audit.log(level, "%s from=%s command=%s result=%s via=%s", self.jid,
                      audit_field(str(sender)), audit_field(command), status, via)

    def software_name(self) -> str:
        """The name this daemon gives in service discovery and software version."""
        return "netchat"

    # -- commands and help (Perl API) --------------------------------------------------

    def setCommand(self, name: str, command: Any):
        """Set the handler of a command: a method name (string) or a callable (called
        with the command's arguments only)."""
        self.commands[name] = command

    def getHandler(self, name: str) -> Optional[Callable]:
        """The handler of a command: ``help``; the ``commands`` map; a ``handleXxx``
        method (``save`` -> ``handleSave``). None when there is none."""
        return find_handler(self, self.commands, name)

    def showHelp(self, command: Optional[str] = None) -> str:
        """help [COMMAND]: list the commands, or describe one."""
        if command is not None:
            return help_for(self, self.commands, self.help, command)
        return "Available commands: " + " ".join(command_names(self, self.commands))

    # -- master ------------------------------------------------------------------------

    def _master_jid(self) -> str:
        return self.cxn.expand_jid(self.master)

    def _is_master(self, jid) -> bool:
        """Is ``jid`` the master? A master given without ``@`` is a user on the
        daemon's own domain; with ``/`` only that resource counts."""
        master = normalize_jid(self._master_jid())
        return (normalize_jid(jid) if "/" in master else bare_jid(jid)) == master

    def checkMaster(self, sid, presence: Presence):
        """Exit (status 0) when the master, once seen available, has gone away."""
        if not self._is_master(presence.getFrom()) or not self._master_seen:
            return None
        if self.cxn.is_available(bare_jid(presence.getFrom())):
            return None  # another resource of the master is still here
        log.info("[%s] master %s terminated, exiting", self.jid, presence.getFrom())
        self.close()
        sys.exit(0)

    # -- synchronisation (Perl API) ----------------------------------------------------

    def _node_key(self, jid) -> Optional[str]:
        """The node (as given to waitUntilAllHere) that ``jid`` is, if any."""
        sync = self._sync
        if sync is None:
            return None
        return sync["keys"].get(bare_jid(jid))

    def waitUntilAllHere(self, nodes: Iterable[str], timeout: Optional[float] = None) -> bool:
        """Wait until every node (user ids on this server, or JIDs) is online.

        A node that logs out meanwhile is waited for again. Missing nodes are nudged
        with directed presence (and, once, a subscription request) at most every
        0.5 s. Returns True, after posting ``"hey guys"`` (subject ``allhere``) to each
        node; raises :class:`~netchat.Timeout` naming the missing nodes.
        """
        nodes = list(nodes)
        keys = {bare_jid(self.cxn.expand_jid(node)): node for node in nodes}
        self._sync = sync = {"keys": keys, "waiting": set(nodes),
                             "lastcheck": {node: 0.0 for node in nodes},
                             "subscribed": set()}
        for bare, node in keys.items():
            if self.cxn.is_available(bare):
                sync["waiting"].discard(node)
        ids = [self.unshift_callback("available", self.onSyncLogin),
               self.unshift_callback("unavailable", self.onSyncLogout),
               self.unshift_callback("error", self.onSyncError)]
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while sync["waiting"]:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    missing = sorted(sync["waiting"])
                    raise Timeout("%d of %d node(s) not here after %.1fs: %s"
                                  % (len(missing), len(nodes), timeout, ", ".join(missing)),
                                  missing=missing)
                for node in list(sync["waiting"]):
                    if now - sync["lastcheck"][node] >= NUDGE_INTERVAL:
                        self._nudge(node, sync)
                        sync["lastcheck"][node] = now
                next_nudge = min(sync["lastcheck"][n] for n in sync["waiting"]) \
                    + NUDGE_INTERVAL if sync["waiting"] else now
                wait = max(0.0, next_nudge - time.monotonic())
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                if self.process(wait) is None:
                    raise Disconnected("connection lost while waiting for nodes: %s"
                                       % self.cxn._dead)
        finally:
            for type, id in zip(("available", "unavailable", "error"), ids):
                self.remove_callback(type, id)
            self._sync = None
        for node in nodes:
            self.post(node, "hey guys", subject=ALLHERE_SUBJECT)
        return True

    def _nudge(self, node: str, sync: dict):
        jid = bare_jid(self.cxn.expand_jid(node))
        self.cxn.send_presence(jid)
        self._presence_sent.add(jid)
        if jid not in sync["subscribed"]:
            self.cxn.subscribe(jid)
            sync["subscribed"].add(jid)

    def onSyncLogin(self, sid, presence: Presence):
        """While waiting for nodes: one of them is online."""
        node = self._node_key(presence.getFrom())
        if node is None:
            return None
        log.debug("presence from %s", presence.getFrom())
        self._sync["waiting"].discard(node)
        return True

    def onSyncLogout(self, sid, presence: Presence):
        """While waiting for nodes: one of them went away; wait for it again."""
        node = self._node_key(presence.getFrom())
        if node is None:
            return None
        if not self.cxn.is_available(bare_jid(presence.getFrom())):
            log.debug("bye bye from %s", presence.getFrom())
            self._sync["waiting"].add(node)
        return True

    def onSyncError(self, sid, stanza):
        """While waiting for nodes: an error (e.g. no such user) about one of them."""
        node = self._node_key(stanza.getFrom())
        if node is None:
            return None
        log.info("[%s] node %s not found: %s", self.jid, stanza.getFrom(), stanza.getError())
        self._sync["lastcheck"][node] = time.monotonic()
        return True

    # -- delegated to the connection (a daemon can coordinate) -------------------------

    def post(self, to: Any, message: str, **options) -> str:
        """Send a message (see :meth:`netchat.jabber.Connection.post`)."""
        return self.cxn.post(to, message, **options)

    def send_request(self, to: Any, message: str, onReply: Optional[Callable] = None,
                     **options) -> str:
        """Send a request; returns its thread id (see
        :meth:`netchat.jabber.Connection.send_request`)."""
        return self.cxn.send_request(to, message, onReply, **options)

    def request(self, to: Any, message: str, timeout: Optional[float] = None,
                **options) -> str:
        """Send a request and return the reply's body (see
        :meth:`netchat.jabber.Connection.request`)."""
        return self.cxn.request(to, message, timeout, **options)

    def requestAll(self, nodes: Iterable[Any], message: str, timeout: float,
                   attachments: Iterable[Any] = None, **options) -> Dict[Any, Reply]:
        """Ask every node at once; returns ``{node: Reply}`` with status ``ok``,
        ``error``, ``timeout`` or ``offline`` (see
        :meth:`netchat.jabber.Connection.requestAll`)."""
        return self.cxn.requestAll(nodes, message, timeout, attachments, **options)

    def onlineNodes(self) -> List[str]:
        """Bare JIDs seen available (from the presence this daemon received), sorted."""
        return sorted({jid.partition("/")[0] for jid in self.cxn.available_jids()})

    def barrier(self, timeout: Optional[float] = None):
        """Wait until every request sent has its reply; raises
        :class:`~netchat.Timeout` naming the outstanding threads."""
        return self.cxn.barrier(timeout)

    def subscribe(self, jid: Any):
        """Ask to see ``jid``'s presence."""
        return self.cxn.subscribe(jid)

    def poll(self) -> Optional[int]:
        return self.cxn.poll()

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        return self.cxn.wait(timeout)

    def count_transactions(self) -> int:
        return self.cxn.count_transactions()

    def start_transaction(self, thread: str, onReply: Optional[Callable] = None):
        return self.cxn.start_transaction(thread, onReply)

    def end_transaction(self, thread: str):
        return self.cxn.end_transaction(thread)


def audit_field(value: str, limit: int = AUDIT_FIELD_MAX) -> str:
    """``value`` as one word of an audit line: as it is when it holds only visible,
    unambiguous characters; else in double quotes, with ``"``, ``\\`` and ``=`` escaped and
    every control, format, separator (space included) or unassigned character written
    as ``\\xNN``/``\\uNNNN``. Longer than ``limit`` characters: cut, ending in ``...``."""
    cut = len(value) > limit
    if cut:
        value = value[:limit]
    out, plain = [], value != ""
    for char in value:
        if char in '"\\=':
            out.append("\\" + char)
            plain = False
        elif unicodedata.category(char)[0] in "CZ":
            out.append(char.encode("unicode_escape").decode("ascii") if char != " "
                       else "\\x20")
            plain = False
        else:
            out.append(char)
    text = "".join(out) + ("..." if cut else "")
    return text if plain else '"%s"' % text


class _Job:
    """One request for the worker pool: run the handler, respond with the outcome."""
    __slots__ = ("daemon", "handler", "command", "args", "request", "respond")

    def __init__(self, daemon: Daemon, handler: Callable, command: str, args: list,
                 request, respond: Callable[[str, str], Any]):
        self.daemon, self.handler, self.command = daemon, handler, command
        self.args, self.request, self.respond = args, request, respond

    def __call__(self):
        text, status = self.daemon._call_handler(self.handler, self.command, self.args,
                                                 self.request)
        try:
            self.respond(text, status)
        except Disconnected as exc:
            log.warning("reply to %s lost: %s", self.request.getFrom(), exc)
        except Exception:  # a reply is always sent: say what went wrong instead
            log.exception("replying to %r from %s failed", self.command,
                          self.request.getFrom())
            self.respond("error: the reply could not be sent", "error")
