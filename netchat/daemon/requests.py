"""One request pipeline for a daemon: admit -> dispatch -> reply -> audit.

Chat requests (:meth:`RequestPipeline.handle`) and XEP-0050 ad-hoc commands
(:mod:`netchat.daemon.services`) go through the same steps:

1. **admit**: the admission chain (:mod:`netchat.daemon.admission`), the same for both:
   the sender may command the daemon (``allow``), the body is under ``max_body``
   (and the parser kept all of it), a copy of a request already seen (same sender,
   id and thread: :mod:`netchat.daemon.dedupe`) is answered with the first one's reply and
   never runs again, a request past the deadline its sender gave
   (:mod:`netchat.client.deadlines`) is answered ``expired``, and so is a stored request
   older than ``max_age``; once parsed, the command's handler may be run by the
   sender (``acl``, decided on the handler that would run), its attachments could
   be read, and arguments and attachments are under ``max_args`` and
   ``max_attachment``;
2. **dispatch**: the handler runs inline or on the worker pool (``busy`` when its
   backlog is full or the daemon is closing); a request whose deadline passed while
   it waited for a worker is answered ``expired`` instead. A request linking files
   (XEP-0066) has them fetched off the loop thread first, within limits, a refused
   or failed one answered ``error`` before any handler runs (see
   :mod:`netchat.daemon.linked_files`);
3. **reply**: the result becomes text (an error reply when it cannot), a reply over
   ``max_reply`` becomes ``too-large``; a reply is always sent;
4. **audit**: one line on the ``netchat.audit`` logger per request handled or refused,
   and the request counted (:mod:`netchat.daemon.stats`: :meth:`netchat.Daemon.stats`).

The temporary files of a request are removed once its reply is sent, so after its
handler returned.
"""

import collections
import logging
import threading
import time
import traceback
from typing import Any, Callable, List, Optional, Protocol

from .admission import ANSWERED, CHAT_CHECKS, Admission, Outcome, first_verdict
from ..attachments import AttachmentError, parse_attachments
from .audit import audit_line
from .access import AccessPolicy
from .commands import Command, ParseError, arity_error, parse_body
from ..client.download import Downloader, file_name_of, oob_links
from .linked_files import LinkedRequests
from ..client.deadlines import valid_for
from .dedupe import RAN, RUNNING, RecentRequests
from ..errors import CommandError, Disconnected
from .options import RequestOptions
from .pool import WorkerPool
from ..client.redelivery import NS_RECEIPTS, receipt_xml
from .reply_texts import ReplyTexts
from .stats import Counts
from ..client.upload import NS_OOB
from ..client.wire import NS_DELAY, NS_LEGACY_DELAY, NS_NETCHAT, reply_xml

log = logging.getLogger(__name__)

__all__ = ["RequestPipeline", "Commands", "Workers", "Outcome"]  # Outcome: netchat.daemon.admission

#: The answer to a copy of a request that ran, whose reply is no longer kept.
MSG_RAN = "this request ran already; its reply is no longer kept"

TOLD_MAX = 4096               # requesters remembered as told of the duplicate memory

#: ``respond(text, status)``: sends the outcome of a request, on any thread.
Respond = Callable[[str, str], Any]


class Commands(Protocol):
    """Where the pipeline looks commands up (a :class:`~netchat.Daemon`)."""

    def getHandler(self, name: str) -> Optional[Callable]: ...

    def command_for(self, name: str) -> Optional[Command]: ...


class Workers(Protocol):
    """Where handlers run (a :class:`~netchat.Daemon`): its worker pool (None: in
    the thread calling ``process()``), whether it still takes requests (False once
    closing), and how to wake the thread in ``process()``."""
    pool: Optional[WorkerPool]
    accepting: bool

    def interrupt(self) -> None: ...


class RequestPipeline:
    """The steps every request of a daemon goes through (see the module), given
    what they need of it: its ``options``, ``texts`` (the ``MSG_*`` replies),
    ``access``, ``commands``, ``workers`` and connection ``cxn``."""

    def __init__(self, options: RequestOptions, texts: ReplyTexts, access: AccessPolicy,
                 commands: "Commands", workers: "Workers", cxn: Any):
        #: What requests may carry and take (see :mod:`netchat.daemon.options`).
        self.options = options
        #: The replies the daemon sends on its own (``MSG_*``, a subclass may change).
        self.texts = texts
        #: Who may do what (``allow`` and ``acl``).
        self.access = access
        #: Where commands are looked up; where handlers run; the connection.
        self.commands, self.workers, self.cxn = commands, workers, cxn
        self._local = threading.local()
        #: Fetches the files requests link to (``max_file``, ``download_hosts``).
        self.downloader = Downloader(cxn, options.download_hosts, options.max_file,
                                     options.download_timeout)
        #: Runs the requests that link files, fetching them off the loop thread (see
        #: :mod:`netchat.daemon.linked_files`).
        self.linked = LinkedRequests(self)
        #: Requests seen recently and their replies (see :mod:`netchat.daemon.dedupe`):
        #: a copy of one of them is answered from here and never runs.
        self.recent = RecentRequests()
        self._told: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        #: What :meth:`netchat.Daemon.stats` counts (see :mod:`netchat.daemon.stats`).
        self.counts = Counts()

    def _first_reply_to(self, sender) -> bool:
        """Is this the first reply to ``sender`` (its bare JID) lately?"""
        name = str(sender).partition("/")[0]
        told = self._told
        if name in told:
            return False
        told[name] = None
        if len(told) > TOLD_MAX:
            told.popitem(last=False)
        return True

    @property
    def current_message(self):
        """The request being handled on this thread, else None."""
        return getattr(self._local, "message", None)

    # -- chat requests -------------------------------------------------------------------

    def handle(self, msg) -> Any:
        """Run a chat request from start to reply; True when answered (None when the
        message is not a request: no body)."""
        body = msg.getBody()
        if body is None:
            return None  # a chat state or receipt: nothing to run
        msg.netchat_received = time.monotonic()  # for the latency (netchat.daemon.stats)
        sender = msg.getFrom()
        log.debug("[%s] from(%s): %.200s", self.cxn.jid, sender, body)
        valid, delayed, linked = scan_request(msg)
        request = Admission(msg, sender, len(body), msg.getThread(),
                            lambda seen: self.answer_copy(msg, sender, seen), valid,
                            delayed, getattr(msg, "truncated", None))
        verdict = first_verdict(CHAT_CHECKS.before_parsing, self, request)
        if verdict is ANSWERED:
            self.audit(sender, first_word(body), "duplicate")
            return True
        if isinstance(verdict, Outcome):
            return self.reply(msg, verdict, command=first_word(body))
        links = oob_links(msg, self.options.max_args + 1) if linked else []
        if any(body.strip() == link.url for link in links):
            # a file sent alone, as mobile clients send one: the body is its URL
            if not self.options.file_command:
                return self.reply(msg, Outcome(self.texts.MSG_FILE_ALONE, "unknown"),
                                  command="-")
            body = "%s %s" % (self.options.file_command, quote(file_name_of(links[0].url)))
        try:
            command, args = parse_body(body)
        except ParseError as exc:
            return self.reply(msg, Outcome("error: %s" % exc, "error"),
                              command=first_word(body))
        if command is None:
            return self.reply(msg, Outcome(self.texts.MSG_EMPTY_REQUEST, "unknown"),
                              command="-")
        found = self.commands.command_for(command)
        name = found.name if found is not None else command
        request.command, request.found = name, found
        request.nargs = len(args) + len(links)
        try:
            attachments = request.attachments = parse_attachments(msg)
        except AttachmentError as exc:
            attachments, request.malformed = [], str(exc)
        verdict = first_verdict(CHAT_CHECKS.after_parsing, self, request)
        if isinstance(verdict, Outcome):
            return self.reply(msg, verdict, command=name)
        handler = found.handler if found is not None else None
        if not links:
            words: List[Any] = args + attachments if attachments else args
            return self.dispatch(name, words, msg, lambda text, status: self.reply(
                msg, Outcome(text, status), command=name), handler)
        return self.linked.start(name, args + attachments, links, msg,
                                 lambda text, status: self.reply(
                                     msg, Outcome(text, status), command=name), handler)

    def answer_copy(self, msg, sender, seen):
        """Answer a copy of a chat request seen recently (see
        :func:`netchat.daemon.admission.not_a_copy`): with the first one's reply, or, while
        the first runs, with a receipt (XEP-0184) when the copy asks for one, so that
        the requester stops sending copies on its timer."""
        if seen is RAN:
            self.reply(msg, Outcome(MSG_RAN, "error"))
        elif seen is RUNNING:
            if msg.getID() and msg.getTag("request", namespace=NS_RECEIPTS) is not None:
                try:
                    self.cxn.send_xml(receipt_xml(sender, msg.getID()),
                                             flush=False)
                except Disconnected:
                    pass
        else:
            try:
                self.cxn.send_xml(seen, flush=False)
            except Disconnected as exc:
                log.warning("[%s] reply to a copy from %s lost: %s", self.cxn.jid,
                            sender, exc)

    def expired(self, msg) -> Outcome:
        """The answer to a request past the deadline its sender gave (in its
        ``<valid/>`` child, or in ``msg.netchat_valid`` when the element is elsewhere:
        an ad-hoc command carries it inside its ``<command/>``)."""
        return Outcome(self.texts.MSG_DEADLINE % (
            valid_for(msg, getattr(msg, "netchat_valid", None)) or 0), "expired")

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, command: str, args: list, request, respond: Respond,
                 handler: Optional[Callable] = None) -> Any:
        """Run the handler of ``command`` (a canonical name; ``handler`` when already
        found; inline, or on the pool) and ``respond(text, status)`` with the outcome,
        on whichever thread ran it."""
        if handler is None:
            handler = self.commands.getHandler(command)
        if handler is None:
            return respond(self.texts.MSG_UNKNOWN_COMMAND % command, "unknown")
        pool = self.workers.pool
        if pool is not None and command != "help":
            if not self.workers.accepting:
                return respond(self.texts.MSG_SHUTTING_DOWN, "busy")
            if not pool.submit(Job(self, handler, command, args, request, respond)):
                return respond(self.texts.MSG_BUSY % pool.pending, "busy")
            return True
        return respond(*self.call_handler(handler, command, args, request))

    def call_handler(self, handler: Callable, command: str, args: list, msg) -> Outcome:
        """Run a handler: its outcome, whatever it returns or raises (``expired``,
        without running it, when the request's deadline has passed)."""
        deadline = getattr(msg, "netchat_deadline", None)
        if deadline is not None and time.monotonic() >= deadline:
            return self.expired(msg)
        self._local.message = msg
        try:
            result = handler(*args)
        except CommandError as exc:
            return self.text_of(exc, "error")
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            usage = arity_error(handler, args) if isinstance(exc, TypeError) else None
            if usage is not None:  # the words do not fit the handler: say so
                log.warning("[%s] command %r from %s: the handler %s (extra words: "
                            "give it *args)", self.cxn.jid, command, msg.getFrom(),
                            usage)
                return Outcome("error: %s %s" % (command, usage), "error")
            log.error("[%s] command %r from %s failed:\n%s", self.cxn.jid, command,
                      msg.getFrom(), traceback.format_exc().rstrip())
            return self.text_of(exc, "error", "error: %s: " % type(exc).__name__)
        finally:
            self._local.message = None
        if result is None:
            return Outcome("", "ok")
        return self.text_of(result, "ok")

    def text_of(self, value: Any, status: str, prefix: str = "") -> Outcome:
        """``prefix`` + ``value`` as text; an error outcome when ``value`` cannot
        become text (its ``__str__`` raises or returns something else)."""
        try:
            if isinstance(value, bytes):
                text = value.decode("utf-8", "backslashreplace")
            else:
                text = str(value)
                if not isinstance(text, str):
                    raise TypeError("__str__ returned %s" % type(text).__name__)
            return Outcome(prefix + text, status)
        except Exception as exc:
            log.error("[%s] a result of type %s cannot become text: %r", self.cxn.jid,
                      type(value).__name__, exc)
            return Outcome(self.texts.MSG_NO_TEXT % ("%s: %s" % (type(exc).__name__, exc)),
                           "error")

    # -- reply and audit -------------------------------------------------------------------

    def reply(self, msg, outcome: Outcome, command: Optional[str] = None) -> bool:
        """Send the reply to ``msg`` (any thread), a ``too-large`` one when it would be
        over ``max_reply``; with ``command``, audit it."""
        body, status = outcome
        # the first reply to a requester carries the marker even when ok: it says
        # this daemon keeps a duplicate memory (netchat.client.redelivery sends it copies)
        xml = reply_xml(msg, body, status, marked=self._first_reply_to(msg.getFrom()))
        data = None
        if len(xml) * 4 > self.options.max_reply:  # else it fits whatever its characters
            data = xml.encode("utf-8")
            if len(data) > self.options.max_reply:
                log.warning("[%s] a reply of %d bytes to %s is over max_reply (%d)",
                            self.cxn.jid, len(data), msg.getFrom(), self.options.max_reply)
                status = "too-large"
                xml, data = reply_xml(msg, self.texts.MSG_REPLY_TOO_LARGE % (
                    len(data), self.options.max_reply), status), None
        if command is not None:
            self.audit(msg.getFrom(), command, status,
                       "groupchat" if getattr(msg, "netchat_room", None) else "chat",
                       getattr(msg, "netchat_received", None))
        key = getattr(msg, "netchat_key", None)
        if key is not None:
            self.recent.answered(key, data if data is not None else xml)
        try:
            self.cxn.send_xml(data if data is not None else xml, flush=False)
        except Disconnected as exc:
            log.warning("[%s] reply to %s lost: %s", self.cxn.jid, msg.getFrom(), exc)
            return False
        return True

    def audit(self, sender, command: str, status: str, via: str = "chat",
              received: Optional[float] = None):
        """One line on the ``netchat.audit`` logger: who, command, result; the request
        is counted (``duplicate``: as a copy), and ``received`` (its arrival,
        ``time.monotonic()``) gives its latency (see :mod:`netchat.daemon.stats`). What a
        peer chose (the command, the resource) is escaped: see
        :func:`netchat.daemon.audit.audit_field`."""
        self.counts.ended(status, received)
        audit_line(self.cxn.jid, sender, command, status, via)


def quote(word: str) -> str:
    """``word`` as one argument of a request body."""
    return '"%s"' % word.replace("\\", "\\\\").replace('"', '\\"')


def scan_request(msg):
    """One look through a request's children: ``(its <valid/> element or None,
    whether it carries a delay stamp, whether it carries an XEP-0066 link)``, so that
    a plain request costs no searches for what it does not hold."""
    valid, delayed, linked = None, False, False
    for kid in msg.kids:
        namespace = kid.namespace
        if namespace == NS_NETCHAT:
            if kid.name == "valid" and valid is None:
                valid = kid
        elif namespace == NS_OOB:
            linked = True
        elif namespace in (NS_DELAY, NS_LEGACY_DELAY):
            delayed = True
    return valid, delayed, linked


def first_word(body: str) -> str:
    """The command of a request that was refused before it was parsed."""
    words = body.split(None, 1)
    return words[0] if words else "-"


class Job:
    """One request for the worker pool: run the handler, respond with the outcome; a
    reply is always sent, even when sending the first one fails."""
    __slots__ = ("pipeline", "handler", "command", "args", "request", "respond")

    def __init__(self, pipeline: RequestPipeline, handler: Callable, command: str,
                 args: list, request, respond: Respond):
        self.pipeline, self.handler, self.command = pipeline, handler, command
        self.args, self.request, self.respond = args, request, respond

    def __call__(self):
        text, status = self.pipeline.call_handler(self.handler, self.command, self.args,
                                                  self.request)
        try:
            self.respond(text, status)
        except Disconnected as exc:
            log.warning("reply to %s lost: %s", self.request.getFrom(), exc)
        except Exception:  # say what went wrong instead
            log.exception("replying to %r from %s failed", self.command,
                          self.request.getFrom())
            self.respond("error: the reply could not be sent", "error")
