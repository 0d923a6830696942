"""Standard XMPP surfaces of a daemon, so that any XMPP client can drive it.

- XEP-0030 service discovery: disco#info (identity ``client/bot``, features) and
  disco#items, on the daemon's full JID.
- XEP-0050 ad-hoc commands: every command the requester may run is listed under the
  node ``http://jabber.org/protocol/commands``, named by its help line. A command
  executes in one step: the client submits a data form with one text field, ``args``,
  holding the arguments (parsed as in a chat request); the result comes back as a note
  and a result form holding the handler's reply. An ``execute`` without a form is
  answered with that form first (status ``executing``), which is what graphical
  clients expect. The same access control, limits and worker pool apply as for chat
  requests: a command passes the same admission chain (:mod:`netchat.daemon.admission`).
  Errors use the XEP's conditions: ``item-not-found`` (no such command),
  ``forbidden`` (not allowed), ``bad-request`` with ``bad-action``, ``bad-sessionid``
  or ``malformed-action``, ``not-acceptable`` (over a cap), ``resource-constraint``
  (the worker pool is full).
  A command submitted with its form runs once per iq: a copy (same sender full JID,
  iq id and node, from the memory of recent requests, :mod:`netchat.daemon.dedupe`, shared
  with chat requests) that comes while the first runs gets nothing of its own (the
  first's answer, with the same id, answers both); one that comes later gets the
  first one's answer, byte for byte, and never runs (when that answer was let go:
  a ``completed`` error note saying the request ran already). Refusals of the
  sender itself (not allowed, too large) are not remembered, as for chat requests.
  A command carrying netchat's ``<valid xmlns='urn:x-netchat:0' for='N'/>``
  (:mod:`netchat.client.deadlines`) inside its ``<command/>`` (XEP-0050 allows elements of
  other namespaces there; servers bounce an iq with two children) is valid for N
  seconds from its arrival; past that, also after a wait for a worker, it never runs
  and is answered ``completed`` with an error note and the status ``expired``, like
  a chat request.
- The ``stats`` ad-hoc command, the daemon's own: its counters
  (:meth:`~netchat.Daemon.stats`) as a note and a result form, one field each, in one
  step (no form to fill). Only for the daemon's own account (any resource) and its
  ``master`` by default, whoever else may command it: the counts say how busy and
  how healthy the daemon is, nothing a peer needs. An ``acl`` entry ``"stats"``
  names who may see them instead. A daemon with a command of its own named
  ``stats`` offers that one under the node instead.
- XEP-0092 software version: ``netchat`` and its version; the operating system only
  when the daemon's ``version_os`` option is true.
- XEP-0199 ping (the server's own pings are answered by the connection).

xmpppy's own ``commands`` module is broken on Python 3; this one is written for netchat.
"""

import collections
import logging
import os
import time
from typing import Any, Dict, List, Optional, Protocol

from xmpp.protocol import Iq
from xmpp.simplexml import Node

from ..version import __version__
from .admission import ADHOC_CHECKS, ANSWERED, Admission, Outcome, first_verdict
from .audit import audit_line
from .commands import ParseError, command_names, parse_body
from .dedupe import RAN, RUNNING
from ..errors import Disconnected
from .requests import MSG_RAN
from .stats import STATS_NODE, StatsViewers, format_stats, may_see_stats, stats_form
from ..client.wire import NS_NETCHAT
from ..xmpp.parser import NS_PING, NS_XMPP_STANZAS, make_iq, stanza_text



class ServicesHost(StatsViewers, Protocol):
    """What :class:`Services` needs of its daemon (a :class:`~netchat.Daemon`): its
    connection and request pipeline (ad-hoc commands run through it), its commands
    (names, lookup, help, who may run them), its counters, its name and version
    for XEP-0092, the largest answer it may send and two of its reply texts; who
    may see its counters (:class:`~netchat.daemon.stats.StatsViewers`)."""
    cxn: Any
    requests: Any
    commands: Dict[str, Any]
    max_reply: int
    MSG_DENIED: str
    MSG_REPLY_TOO_LARGE: str

    @property
    def jid(self) -> Optional[str]: ...

    def command_for(self, name: str) -> Any: ...

    def may_run(self, jid: Any, name: str) -> bool: ...

    def showHelp(self, command: Optional[str] = None) -> str: ...

    def stats(self) -> Dict[str, Any]: ...

    def software_name(self) -> str: ...

log = logging.getLogger(__name__)

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
NS_VERSION = "jabber:iq:version"

FEATURES = (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_COMMANDS, NS_DATA, NS_PING, NS_VERSION)
SESSION_LIFETIME = 600.0   # seconds an unfinished command session is kept
SESSIONS_MAX = 1000
#: What stands for the thread in the key of an ad-hoc command (with its node) in the
#: memory of recent requests: no chat message's thread holds a NUL.
KEY_THREAD = "\x00ad-hoc\x00"

# netchat reply status -> (error type, XMPP condition) for ad-hoc command refusals
_REFUSALS = {
    "denied": ("auth", "forbidden"),
    "too-large": ("modify", "not-acceptable"),
    "busy": ("wait", "resource-constraint"),
    "unknown": ("cancel", "item-not-found"),
}


class Services:
    """Answers disco, ad-hoc command and version queries for a :class:`Daemon`."""

    def __init__(self, daemon: ServicesHost):
        self.daemon = daemon
        self._sessions: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, iq: Iq) -> bool:
        """Answer ``iq`` if it is one of ours; True when answered."""
        if iq.getType() not in ("get", "set"):
            return False
        children = iq.getChildren()
        if not children:
            return False
        query = children[0]
        namespace, typ = query.getNamespace(), iq.getType()
        if namespace == NS_DISCO_INFO and typ == "get":
            self._disco_info(iq, query)
        elif namespace == NS_DISCO_ITEMS and typ == "get":
            self._disco_items(iq, query)
        elif namespace == NS_COMMANDS and typ == "set" and query.getName() == "command":
            self._command(iq, query)
        elif namespace == NS_VERSION and typ == "get":
            self._version(iq)
        elif namespace == NS_PING and typ == "get":
            self._result(iq)
        else:
            return False
        return True

    def _result(self, iq: Iq, child: Optional[Node] = None):
        self._send(iq, stanza_text(make_iq("result", child, to=iq.getFrom(), id=iq.getID())))

    def _send(self, iq: Iq, xml: str):
        """Send the answer to ``iq``; for a command run once (see :meth:`_execute`), it
        is also the answer its copies get."""
        key = getattr(iq, "netchat_key", None)
        if key is not None:
            self.daemon.requests.recent.answered(key, xml)
        self.daemon.cxn.send_xml(xml)

    def _error(self, iq: Iq, typ: str, condition: str, text: str = "",
               app: Optional[str] = None):
        error = Node("error", attrs={"type": typ})
        error.addChild(condition, namespace=NS_XMPP_STANZAS)
        if app:
            error.addChild(app, namespace=NS_COMMANDS)
        if text:
            error.addChild("text", namespace=NS_XMPP_STANZAS, payload=[text])
        reply = make_iq("error", None, to=iq.getFrom(), id=iq.getID())
        reply.addChild(node=error)
        self._send(iq, stanza_text(reply))

    # -- XEP-0030 -------------------------------------------------------------------------

    def _disco_info(self, iq: Iq, query: Node):
        node = query.getAttr("node")
        answer = Node("query", attrs={"xmlns": NS_DISCO_INFO})
        if node:
            answer.setAttr("node", node)
        if not node:
            answer.addChild("identity", {"category": "client", "type": "bot",
                                         "name": self.daemon.software_name()})
            for feature in FEATURES:
                answer.addChild("feature", {"var": feature})
        elif node == NS_COMMANDS:
            answer.addChild("identity", {"category": "automation", "type": "command-list",
                                         "name": "Commands"})
        elif node in self._allowed_commands(iq.getFrom()) or self._stats_for(
                iq.getFrom(), node):
            answer.addChild("identity", {"category": "automation", "type": "command-node",
                                         "name": self._title(node)})
            for feature in (NS_COMMANDS, NS_DATA):
                answer.addChild("feature", {"var": feature})
        else:
            return self._error(iq, "cancel", "item-not-found")
        self._result(iq, answer)

    def _disco_items(self, iq: Iq, query: Node):
        node = query.getAttr("node")
        answer = Node("query", attrs={"xmlns": NS_DISCO_ITEMS})
        if node == NS_COMMANDS:
            answer.setAttr("node", node)
            for name in self._allowed_commands(iq.getFrom()):
                answer.addChild("item", {"jid": self.daemon.jid, "node": name,
                                         "name": self._title(name)})
            if self._stats_for(iq.getFrom()):
                answer.addChild("item", {"jid": self.daemon.jid, "node": STATS_NODE,
                                         "name": self._title(STATS_NODE)})
        elif node:
            return self._error(iq, "cancel", "item-not-found")
        self._result(iq, answer)

    def _allowed_commands(self, jid) -> List[str]:
        daemon = self.daemon
        return [name for name in command_names(daemon, daemon.commands)
                if daemon.may_run(jid, name)]

    def _stats_for(self, jid, node: str = STATS_NODE) -> bool:
        """Is ``node`` the built-in ``stats`` command, and may ``jid`` run it?"""
        daemon = self.daemon
        return node == STATS_NODE and daemon.command_for(STATS_NODE) is None and \
            may_see_stats(daemon, jid)

    def _title(self, name: str) -> str:
        if name == STATS_NODE and self.daemon.command_for(name) is None:
            return "The daemon's counters: requests, errors, latency, reconnects"
        try:
            return str(self.daemon.showHelp(name)).splitlines()[0][:200]
        except Exception:
            log.exception("help for %r failed", name)
            return name

    # -- XEP-0050 -------------------------------------------------------------------------

    def _command(self, iq: Iq, command: Node):
        daemon = self.daemon
        sender = iq.getFrom()
        node = command.getAttr("node") or ""
        action = command.getAttr("action") or "execute"
        session = command.getAttr("sessionid")
        if action not in ("execute", "complete", "cancel", "next", "prev"):
            return self._error(iq, "modify", "bad-request", app="malformed-action")
        if action in ("next", "prev"):
            return self._error(iq, "modify", "bad-request", app="bad-action")
        if node == STATS_NODE and daemon.command_for(node) is None:
            return self._stats(iq, action, session)
        if node not in command_names(daemon, daemon.commands):
            return self._error(iq, "cancel", "item-not-found",
                               "no command %r; send help for the list" % node)
        form = command.getTag("x", namespace=NS_DATA) if action != "cancel" else None
        if form is not None:
            return self._execute(iq, command, node, form, session)
        if session is not None and not self._take_session(session, node, sender):
            return self._error(iq, "modify", "bad-request", app="bad-sessionid")
        if action == "cancel":
            return self._result(iq, Node("command", attrs={
                "xmlns": NS_COMMANDS, "node": node, "sessionid": session or "",
                "status": "canceled"}))
        if not daemon.may_run(sender, node):
            return self._refused(iq, node, "denied", daemon.MSG_DENIED)
        return self._ask_for_arguments(iq, node)

    def _stats(self, iq: Iq, action: str, session: Optional[str]):
        """The built-in ``stats`` command: completed at once (it takes nothing)."""
        daemon = self.daemon
        sender = iq.getFrom()
        if not may_see_stats(daemon, sender):
            audit_line(daemon.jid, sender, STATS_NODE, "denied", "ad-hoc")
            return self._error(iq, "auth", "forbidden", daemon.MSG_DENIED)
        answer = Node("command", attrs={"xmlns": NS_COMMANDS, "node": STATS_NODE,
                                        "sessionid": session or os.urandom(16).hex(),
                                        "status": "completed"})
        if action == "cancel":
            answer.setAttr("status", "canceled")
        else:
            stats = daemon.stats()
            answer.addChild("note", {"type": "info"}, payload=[format_stats(stats)])
            answer.addChild(node=stats_form(stats))
            audit_line(daemon.jid, sender, STATS_NODE, "ok", "ad-hoc")
        self._result(iq, answer)

    def _execute(self, iq: Iq, command: Node, node: str, form: Node,
                 session: Optional[str]):
        """Run a command submitted with its form: once per iq (see the module)."""
        daemon = self.daemon
        requests = daemon.requests
        sender = iq.getFrom()
        text = ""
        for field in form.getTags("field"):
            if field.getAttr("var") == "args":
                text = " ".join(v.getData() for v in field.getTags("value"))
        valid = command.getTag("valid", namespace=NS_NETCHAT)
        # servers never store an iq: its validity counts from now (delayed=False)
        request = Admission(iq, sender, len(text), KEY_THREAD + node,
                            lambda seen: self._copy(iq, node, session, seen), valid)
        verdict = first_verdict(ADHOC_CHECKS.before_parsing, requests, request)
        if verdict is ANSWERED:
            return None
        if verdict is None and session is not None and \
                not self._take_session(session, node, sender):
            return self._error(iq, "modify", "bad-request", app="bad-sessionid")
        session = session or os.urandom(16).hex()

        def respond(body: str, status: str):
            if status in _REFUSALS:
                return self._refused(iq, node, status, body)
            status = self._completed(iq, node, session, body, status)
            requests.audit(sender, node, status, via="ad-hoc")
        if isinstance(verdict, Outcome):
            return respond(*verdict)
        try:
            _, words = parse_body("x " + text)
        except ParseError as exc:
            return self._error(iq, "modify", "bad-request", str(exc))
        request.command, request.found = node, daemon.command_for(node)
        request.nargs = len(words)
        verdict = first_verdict(ADHOC_CHECKS.after_parsing, requests, request)
        if isinstance(verdict, Outcome):
            return respond(*verdict)
        requests.dispatch(node, words, iq, respond)

    def _copy(self, iq: Iq, node: str, session: Optional[str], seen):
        """Answer a copy of a command seen recently: nothing while the first runs (its
        answer, with the same id, answers both), else the first one's answer."""
        self.daemon.requests.audit(iq.getFrom(), node, "duplicate", via="ad-hoc")
        if seen is RAN:
            self._completed(iq, node, session or os.urandom(16).hex(), MSG_RAN, "error")
        elif seen is not RUNNING:
            try:
                self.daemon.cxn.send_xml(seen)
            except Disconnected as exc:
                log.warning("[%s] answer to a copy from %s lost: %s", self.daemon.jid,
                            iq.getFrom(), exc)

    def _take_session(self, session: str, node: str, sender) -> bool:
        """Use up a session :meth:`_ask_for_arguments` opened; False when there is no
        such session of ``sender`` for ``node``."""
        self._expire_sessions()
        known = self._sessions.pop(session, None)
        return known is not None and known[0] == node and known[1] == str(sender)

    def _refused(self, iq: Iq, node: str, status: str, text: str, audit: bool = True):
        if audit:
            self.daemon.requests.audit(iq.getFrom(), node, status, via="ad-hoc")
        typ, condition = _REFUSALS.get(status, ("modify", "bad-request"))
        self._error(iq, typ, condition, text)

    def _ask_for_arguments(self, iq: Iq, node: str):
        session = os.urandom(16).hex()
        self._expire_sessions()
        self._sessions[session] = (node, str(iq.getFrom()), time.monotonic())
        while len(self._sessions) > SESSIONS_MAX:
            self._sessions.popitem(last=False)
        answer = Node("command", attrs={"xmlns": NS_COMMANDS, "node": node,
                                        "sessionid": session, "status": "executing"})
        actions = answer.addChild("actions", {"execute": "complete"})
        actions.addChild("complete")
        form = answer.addChild("x", {"type": "form"}, namespace=NS_DATA)
        form.addChild("title", payload=[node])
        form.addChild("instructions", payload=[self._title(node)])
        form.addChild("field", {"var": "args", "type": "text-single",
                                "label": "Arguments"})
        self._result(iq, answer)

    def _completed(self, iq: Iq, node: str, session: str, body: str, status: str) -> str:
        """Send the result (``too-large`` instead when over ``max_reply``); returns the
        status sent."""
        answer = Node("command", attrs={"xmlns": NS_COMMANDS, "node": node,
                                        "sessionid": session, "status": "completed"})
        answer.addChild("note", {"type": "info" if status == "ok" else "error"},
                        payload=[body])
        form = answer.addChild("x", {"type": "result"}, namespace=NS_DATA)
        form.addChild("title", payload=[node])
        field = form.addChild("field", {"var": "result", "type": "text-multi",
                                        "label": "Reply"})
        for line in (body.split("\n") if body else [""]):
            field.addChild("value", payload=[line])
        form.addChild("field", {"var": "status", "type": "text-single",
                                "label": "Status"}).addChild("value", payload=[status])
        xml = stanza_text(make_iq("result", answer, to=iq.getFrom(), id=iq.getID()))
        size = len(xml.encode("utf-8"))
        if size > self.daemon.max_reply:
            log.warning("[%s] an ad-hoc result of %d bytes to %s is over max_reply (%d)",
                        self.daemon.jid, size, iq.getFrom(), self.daemon.max_reply)
            self._error(iq, "modify", "not-acceptable",
                        self.daemon.MSG_REPLY_TOO_LARGE % (size, self.daemon.max_reply))
            return "too-large"
        self._send(iq, xml)
        return status

    def _expire_sessions(self):
        cutoff = time.monotonic() - SESSION_LIFETIME
        while self._sessions and next(iter(self._sessions.values()))[2] < cutoff:
            self._sessions.popitem(last=False)

    # -- XEP-0092 -------------------------------------------------------------------------

    def _version(self, iq: Iq):
        answer = Node("query", attrs={"xmlns": NS_VERSION})
        answer.addChild("name", payload=[self.daemon.software_name()])
        answer.addChild("version", payload=[__version__])
        if getattr(self.daemon, "version_os", False):
            import platform
            answer.addChild("os", payload=["%s %s" % (platform.system(),
                                                      platform.release())])
        self._result(iq, answer)
