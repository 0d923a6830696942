"""The Daemon: netchat's port of Net::Chat::Daemon.

Subclass :class:`Daemon`, define ``handleXxx`` methods (or pass ``commands``), and run
it. Each chat message is a request: its body is split into a command and arguments
(:mod:`netchat.daemon.commands`), attachments are appended as :class:`~netchat.Attachment`
arguments, the handler runs, and its return value goes back as the reply (the steps
are in :mod:`netchat.daemon.requests`). See README.rst for a porting table from the Perl
module.

The Daemon holds the options and the Perl API; the work is done by its parts: a
:class:`~netchat.Connection` (``cxn``), a :class:`~netchat.daemon.requests.RequestPipeline`
(``requests``), :class:`~netchat.daemon.peers.Peers` (presence, subscriptions, master), a
:class:`~netchat.daemon.fleet.Fleet` (``waitUntilAllHere``), the worker pool
(:mod:`netchat.daemon.pool`), the standard XMPP services (:mod:`netchat.daemon.services`) and the
runner (:mod:`netchat.daemon.runner`).
"""

import logging
import sys
from typing import Any, Callable, Dict, Iterable, Optional

from xmpp.protocol import Message, Presence

from .access import AccessPolicy
from .callbacks import Callbacks
from .commands import Command, command_names, find_handler, help_for, resolve
from ..client.connection import Connection
from .coordinating import Coordinating
from ..client.download import DOWNLOAD_REQUEST_TIMEOUT, DOWNLOAD_TIMEOUT, MAX_DOWNLOAD, MAX_FILE
from .options import (MAX_ARGS, MAX_ATTACHMENT, MAX_BODY, MAX_REPLY, Option,
                      RequestOptions)
from .fleet import Fleet
from .events import DaemonHandler
from ..jid import parse_user
from ..client.loop import LoopMethods
from .peers import SUBSCRIPTIONS_MAX, Peers
from .pool import WorkerPool
from ..client.redelivery import DEDUPE_XML
from .reply_texts import ReplyTexts
from .requests import RequestPipeline
from .runner import configure_logging, run as run_daemon, serve_forever
from .sd_notify import Notifier
from .services import Services
from .stats import snapshot
from ..client.wire import is_automatic

log = logging.getLogger(__name__)

__all__ = ["Daemon"]

#: Connection options a Daemon passes on to :class:`~netchat.Connection`.
CONNECTION_OPTIONS = ("host", "port", "endpoints", "resolver", "resource", "ca_file",
                      "ca_path", "verify", "direct_tls", "require_tls", "register",
                      "connect_timeout", "ping_interval", "ping_timeout", "password",
                      "stream_management", "resume_timeout", "inline_limit")

class Daemon(ReplyTexts, Coordinating, LoopMethods):
    """A daemon controlled through instant messages (Perl: Net::Chat::Daemon).

    :param user: ``jabber://user@host/resource``, ``xmpp://...`` or
        ``user@host[/resource]``. Another scheme raises ``ValueError``.
    :param password: the account's password.
    :param connection_options: options of :class:`~netchat.Connection`
        (``host``, ``port``, ``ca_file``, ``register``, ...).
    :param commands: command name -> method name (a string) or callable. A callable
        gets the command's arguments only.
    :param help: command name -> help text.
    :param master: a JID, or a user id on the daemon's own domain. The daemon exits
        (status 0) when a master it saw available goes away.
    :param loglevel: Perl-style verbosity (-1 warnings, 0 info, 1+ debug) for the
        ``netchat`` loggers; None leaves logging alone.
    :param threads: run handlers on a pool of this many threads (0: inline in
        :meth:`process`, as Perl did). Only the thread owning the connection writes to
        it; workers hand their replies over through the connection's queue.
    :param max_pending: with ``threads``, how many requests may wait for a free worker
        (default ``max(100, 10 * threads)``); beyond that a request is answered "busy"
        at once.
    :param shutdown_grace: seconds :meth:`close` gives running handlers (default 10).
    :param allow: JID patterns (see :mod:`netchat.daemon.access`) allowed to command the
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
    :param max_file: largest file fetched from an XEP-0066 link, in bytes (default
        100 MiB); ``download_hosts``: more ``host[:port]`` to fetch from besides the
        upload services (see :mod:`netchat.client.download`); ``download_timeout``: seconds
        per file, in all (default 60); ``max_download`` and
        ``download_request_timeout``: bytes (default 256 MiB) and seconds (default
        120) for all the files of one request; ``downloads=False``: fetch nothing,
        answer a request with links ``error``; ``file_command``: the command a file
        sent alone (its URL as the body) runs with the file's name and the file
        (default None: such a message is answered with a hint). Files are fetched
        off the loop thread (see :mod:`netchat.daemon.linked_files`).
    :param rooms: room JIDs (XEP-0045) to join on every connect and take commands
        from while each is members-only and non-anonymous (see :mod:`netchat.client.rooms`).
    :param connect: connect in the constructor (default True, as in Perl); False
        leaves that to :meth:`reconnect`.

    Other keyword options are stored on the object as attributes, as in Perl.
    The constructor connects; failure raises :class:`~netchat.ConnectError` (or its
    subclasses :class:`~netchat.AuthError`, :class:`~netchat.TLSError`).
    """

    #: Subscription requests approved per session (each one grows the daemon's roster
    #: on the server); later ones are declined and answered with directed presence.
    SUBSCRIPTIONS_MAX = SUBSCRIPTIONS_MAX
    #: The class of :attr:`cxn` (``netchat.testing.OfflineDaemon`` swaps in one that
    #: never touches the network).
    connection_class = Connection
    #: Tells systemd how it does under :meth:`serve_forever` (:mod:`netchat.daemon.sd_notify`).
    notifier: Optional[Notifier] = None

    # the constructor's caps and choices, fields of ``options`` (netchat.daemon.options)
    max_body, max_args, max_attachment, max_age, max_reply = (Option() for _ in range(5))
    max_pending, max_file, download_hosts, download_timeout = (Option() for _ in range(4))
    max_download, download_request_timeout, downloads, file_command = \
        (Option() for _ in range(4))

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
                 max_file: int = MAX_FILE, download_hosts: Any = (),
                 download_timeout: float = DOWNLOAD_TIMEOUT,
                 max_download: int = MAX_DOWNLOAD,
                 download_request_timeout: float = DOWNLOAD_REQUEST_TIMEOUT,
                 downloads: bool = True, file_command: Optional[str] = None,
                 rooms: Iterable[str] = (),
                 connect: bool = True, **options: Any):
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
        #: What its requests may carry and take (``max_body`` and the rest are its
        #: fields, also attributes of the daemon: see :mod:`netchat.daemon.options`).
        self.options = RequestOptions(
            max_body=max_body, max_args=max_args, max_attachment=max_attachment,
            max_age=max_age, max_reply=max_reply,
            max_pending=max(100, 10 * self.threads) if max_pending is None
            else max_pending, max_file=max_file, download_hosts=download_hosts,
            download_timeout=download_timeout, max_download=max_download,
            download_request_timeout=download_request_timeout, downloads=downloads,
            file_command=file_command)
        self.shutdown_grace = shutdown_grace
        self.loglevel = loglevel
        if loglevel is not None:
            self.configure_logging(loglevel)

        cxn_options = dict(connection_options or {})
        unknown = set(cxn_options) - set(CONNECTION_OPTIONS)
        if unknown:
            raise ValueError("unknown connection option(s) %s; known: %s"
                             % (", ".join(sorted(unknown)), ", ".join(CONNECTION_OPTIONS)))
        if password is None:
            password = cxn_options.pop("password", None)
        else:
            cxn_options.pop("password", None)

        self.callbacks = Callbacks()
        #: The worker pool (with ``threads``), else None.
        self.pool: Optional[WorkerPool] = None
        #: False once :meth:`close` began: requests are then answered "busy".
        self.accepting = True
        #: True once closed (until :meth:`reconnect`).
        self.closed = False
        self._exit_request: Optional[BaseException] = None
        text_limit = self.options.text_limit  # no more text of one element than needed
        #: The connection (Perl: ``$self->{cxn}``).
        self.cxn = self.connection_class(self.user, password,
                                         handler=DaemonHandler(self),
                                         text_limit=text_limit, **cxn_options)
        # its presence says it keeps a duplicate memory: requesters may send copies
        self.cxn.presence_extra = DEDUPE_XML
        #: The rooms it takes commands from (see :mod:`netchat.client.rooms`).
        self.rooms = [str(room) for room in rooms or ()]
        self.cxn.rooms.run = self.onMessage
        for room in self.rooms:
            self.cxn.rooms.add(room, commands=True)
        #: Who may do what (``allow`` and ``acl``).
        self.access = AccessPolicy(self.cxn.domain, allow, acl, master)
        #: The steps of every request (see :mod:`netchat.daemon.requests`).
        self.requests = RequestPipeline(self.options, texts=self, access=self.access,
                                        commands=self, workers=self, cxn=self.cxn)
        self.peers = Peers(self)
        self.fleet = Fleet(self)
        self.services = Services(self)
        if master is not None:
            self.push_callback("unavailable", self.checkMaster, id="netchat:master")
        if connect:
            self.cxn.connect()
        if self.threads:
            self.pool = WorkerPool(self.threads, self.max_pending,
                                   on_exit=self._exit_from_worker)

    # -- construction helpers ---------------------------------------------------------

    #: Set the ``netchat`` loggers to a Perl-style loglevel (see :mod:`netchat.daemon.runner`).
    configure_logging = staticmethod(configure_logging)

    @property
    def jid(self) -> Optional[str]:
        """The full JID this daemon is logged in as."""
        return self.cxn.jid

    @property
    def resuming(self) -> bool:
        """True while a lost link waits to be resumed (see
        :attr:`netchat.Connection.resuming`)."""
        return self.cxn.resuming

    @property
    def last_message(self) -> Optional[Message]:
        """The request being handled (on the thread handling it), else None."""
        return self.requests.current_message

    @property
    def presence_sent(self):
        """JIDs this session sent directed presence to."""
        return self.peers.presence_sent

    def __repr__(self):
        return "<%s %s>" % (type(self).__name__, self.cxn.jid or self.user)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- running -----------------------------------------------------------------------

    @classmethod
    def run(cls, user: str, retry: Optional[float] = None, **options: Any):
        """Create a daemon and loop forever (Perl: ``run``); see
        :func:`netchat.daemon.runner.run` for what it does on failures and signals."""
        run_daemon(cls, user, retry, **options)

    def serve_forever(self, retry: Optional[float] = None,
                      report: Optional[Callable[[str], None]] = None):
        """Process until :meth:`close` is called, reconnecting when the link is lost
        (with ``retry``); see :func:`netchat.daemon.runner.serve_forever`."""
        serve_forever(self, retry, report)

    def reconnect(self):
        """A fresh connection: authenticate, presence, master watched again.

        Also reopens a daemon that was closed (its worker pool too)."""
        self.cxn.reconnect()
        if self.closed:
            self.closed = False
            self.accepting = True
            self.requests.linked.reopen()
            for room in self.rooms:
                self.cxn.rooms.add(room, commands=True)
            if self.threads:
                self.pool = WorkerPool(self.threads, self.max_pending,
                                       on_exit=self._exit_from_worker)

    def process(self, timeout: Optional[float] = None) -> Optional[int]:
        """Pump the connection for up to ``timeout`` seconds (None: until something
        arrives). Returns 1 when data was received, 0 when the link is fine but nothing
        came, None on error or disconnect. Never raises for network trouble.

        A handler that called ``sys.exit`` on a worker thread ends the process from
        here, on the loop thread, after :meth:`close`.
        """
        check = self.peers.master_check_in() if self.master is not None else None
        if check is not None:
            timeout = check if timeout is None else min(timeout, check)
        linked = self.requests.linked
        if linked.ready and self.cxn.dead is None:  # files fetched meanwhile
            linked.run_ready()
        result = self.cxn.process(timeout)
        if linked.ready and self.cxn.dead is None:
            linked.run_ready()
        if check is not None and self.peers.master_gone():
            log.info("[%s] master %s is gone (its session no longer exists), exiting",
                     self.jid, self.master)
            self.close()
            sys.exit(0)
        if self._exit_request is not None:
            exc, self._exit_request = self._exit_request, None
            self.close()
            raise exc
        return result

    def stats(self) -> Dict[str, Any]:
        """The daemon's counters, a dict: ``requests`` (``ok``, ``errors``, ``busy``,
        all in ``statuses``), ``duplicates``, ``downloads``, ``download_failures``,
        ``reconnects``, ``links_lost``, ``uptime`` and ``latency`` (``p50``, ``p90``,
        ``p99`` seconds over the last ``count``): see :mod:`netchat.daemon.stats`."""
        return snapshot(self)

    def interrupt(self):
        """Make the thread in :meth:`process` return soon; any thread may call it."""
        self.cxn.interrupt()

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
        if self.closed:
            return
        self.closed = True
        self.accepting = False
        if self.notifier is not None:
            self.notifier.stopping()
        grace = self.shutdown_grace if grace is None else grace
        self.requests.linked.close()
        self.cxn.rooms.leave()
        if self.pool is not None:
            leftover = self.pool.shutdown(grace, pump=self._pump_while_closing)
            for job in leftover:
                job.respond(self.MSG_SHUTTING_DOWN, "busy")
            grace = 1.0  # the loop thread only needs to leave select
        self.cxn.close(grace=grace)

    def _pump_while_closing(self, seconds: float):
        return self.cxn.process(seconds) if self.cxn.connected else None

    # -- callbacks (Perl API) ------------------------------------------------------------

    def push_callback(self, type: str, callback: Callable, id: Any = None) -> Any:
        """Add ``callback(sid, stanza)`` for ``type`` (message, available, unavailable,
        error) after the others; returns its id. The first callback that returns a
        true value handles the event and stops the rest."""
        return self.callbacks.add(type, callback, id)

    def unshift_callback(self, type: str, callback: Callable, id: Any = None) -> Any:
        """Like :meth:`push_callback`, but before the others."""
        return self.callbacks.add(type, callback, id, first=True)

    def remove_callback(self, type: str, id: Any) -> bool:
        """Remove the callback with ``id``; True if there was one."""
        return self.callbacks.remove(type, id)

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
        return self.requests.handle(msg)

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

    def command_for(self, name: str) -> Optional[Command]:
        """The :class:`~netchat.daemon.commands.Command` (canonical name, handler) a request
        naming ``name`` reaches, or None when nothing handles it. Every spelling that
        reaches a handler (``Save`` reaches ``handleSave``) has one canonical name
        (``save``): the one ``acl``, audit lines and ad-hoc command nodes use."""
        return resolve(self, self.commands, name)

    def may_run(self, jid, name: str) -> bool:
        """May ``jid`` run command ``name`` (any spelling)? Decided on the handler that
        would run: the ``acl`` entry of its canonical name; else the entries of every
        other name of that same handler (all must allow ``jid``); else ``allow``."""
        return self.access.may_run_command(jid, name, self.command_for)

    def showHelp(self, command: Optional[str] = None) -> str:
        """help [COMMAND]: list the commands, or describe one."""
        if command is not None:
            return help_for(self, self.commands, self.help, command)
        return "Available commands: " + " ".join(command_names(self, self.commands))

    # -- master and synchronisation (Perl API) ------------------------------------------

    def is_master(self, jid) -> bool:
        """Is ``jid`` this daemon's master (see the ``master`` option)?"""
        return self.peers.is_master(jid)

    def checkMaster(self, sid, presence: Presence):
        """Exit (status 0) when the master, once seen available, has gone away."""
        if not self.peers.master_left(presence.getFrom()):
            return None
        log.info("[%s] master %s terminated, exiting", self.jid, presence.getFrom())
        self.close()
        sys.exit(0)
