"""What a coordinator learns of many nodes: :func:`request_all` (the fan-out of
``requestAll``) and its per-node verdicts (:class:`Reply`: ok, error, timeout,
offline).

It drives a connection through its public methods (``open_request``,
``end_transaction``, ``is_available``, ``wait_until``, ``connected``), so it can be
tested alone; the open requests themselves are in :mod:`netchat.client.transactions`.
"""

import time
from typing import Any, Dict, Iterable, Optional

from ..errors import Disconnected
from .transactions import Transaction
from .wire import reply_status

__all__ = ["Reply", "ReplyText", "request_all"]


class Reply:
    """What :func:`request_all` learned of one node.

    ``status``: ``ok`` (it answered), ``error`` (an error stanza, or a reply whose
    netchat marker says the command failed, was unknown, denied, ...), ``timeout`` (no
    answer in time) or ``offline`` (known to be offline: no request was sent, or it
    went offline before answering). ``body``: the reply's text (or the error), None
    when there was none. ``elapsed``: seconds from sending to the answer (or to the
    verdict). ``condition``: the XMPP error condition or the reply marker's status.
    ``message``: the reply stanza, when there was one.
    """
    __slots__ = ("status", "body", "elapsed", "condition", "message")

    def __init__(self, status: str, body: Optional[str] = None, elapsed: float = 0.0,
                 condition: Optional[str] = None, message: Any = None):
        self.status, self.body, self.elapsed = status, body, elapsed
        self.condition, self.message = condition, message

    def __repr__(self):
        return "Reply(%r, %r, elapsed=%.3f%s)" % (
            self.status, self.body, self.elapsed,
            ", condition=%r" % self.condition if self.condition else "")

    @classmethod
    def of(cls, tx: Transaction) -> "Reply":
        """The verdict on a settled transaction."""
        elapsed = (tx.finished or time.monotonic()) - tx.started
        if tx.error is not None:
            condition = "disconnected" if isinstance(tx.error, Disconnected) \
                else getattr(tx.error, "condition", None)
            status = "offline" if getattr(tx.error, "offline", False) else "error"
            return cls(status, str(tx.error), elapsed, condition)
        msg = tx.reply
        status = reply_status(msg) or "ok"
        return cls("ok" if status == "ok" else "error", msg.getBody() or "", elapsed,
                   None if status == "ok" else status, msg)


class ReplyText(str):
    """The body of a reply as :meth:`~netchat.Connection.request` returns it: a
    ``str``, as in Perl, that also says how the request went.

    ``status``: the status in the daemon's reply marker (``ok``, ``error``,
    ``unknown``, ``denied``, ``too-large``, ``busy``, ``expired``); ``ok`` for a
    reply without one (a netchat ``ok`` reply, or a Perl node's). ``ok``: whether the
    status is ``ok``. ``message``: the reply stanza.
    """
    __slots__ = ("status", "message")
    status: str
    message: Any

    def __new__(cls, body: str, status: str = "ok", message: Any = None):
        text = super().__new__(cls, body)
        text.status, text.message = status, message
        return text

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def of(cls, msg) -> "ReplyText":
        """The text of the reply stanza ``msg``."""
        return cls(msg.getBody() or "", reply_status(msg) or "ok", msg)


def request_all(conn, nodes: Iterable[Any], message: str, timeout: float,
                attachments: Iterable[Any] = None, **options) -> Dict[Any, Reply]:
    """See :meth:`netchat.Connection.requestAll`; ``conn`` is a connection (its public
    ``open_request``, ``writing_together``, ``end_transaction``, ``is_available``,
    ``wait_until`` and ``connected``)."""
    nodes = list(dict.fromkeys(nodes))
    deadline = time.monotonic() + timeout
    results: Dict[Any, Reply] = {}
    asked: Dict[Any, Transaction] = {}

    def ask(node, flush=True):
        asked[node] = conn.open_request(node, message, attachments=attachments,
                                        timeout=max(deadline - time.monotonic(), 0.001),
                                        flush=flush, **options)

    with conn.writing_together():  # a few writes, not one per node
        for node in nodes:
            if conn.is_available(node) is False:
                results[node] = Reply("offline", elapsed=0.0)
            else:
                ask(node, flush=False)

    def pending():      # asked, not answered, not given up on
        return [n for n, tx in asked.items() if n not in results and not tx.done]

    # nodes silent for a while are pinged: a session gone with its server's cluster
    # member left no unavailable presence behind (see netchat.client.liveness)
    from .liveness import LivenessWatch
    watch = LivenessWatch(conn)

    def went_offline():  # pending, and found unavailable (presence or ping) meanwhile
        return [n for n in pending() if conn.is_available(n) is False or watch.gone(n)
                or asked[n].offline]

    def came_online():   # reported offline without asking, and now available
        return [n for n, r in results.items()
                if r.status == "offline" and n not in asked and conn.is_available(n)]

    while pending() and conn.connected:
        watch.check(pending())
        if not conn.wait_until(lambda: not pending() or went_offline() or came_online(),
                               watch.due(deadline)):
            if time.monotonic() >= deadline or not conn.connected:
                break
            continue
        for node in came_online():
            del results[node]
            ask(node)
        for node in went_offline():
            tx = asked[node]
            bounced = tx.error if tx.offline else None
            conn.end_transaction(tx.thread)
            results[node] = Reply("offline", str(bounced) if bounced else None,
                                  time.monotonic() - tx.started,
                                  getattr(bounced, "condition", None))
    for node, tx in asked.items():
        if node in results:
            continue
        if tx.done:
            results[node] = Reply.of(tx)
        else:
            conn.end_transaction(tx.thread)
            results[node] = Reply("timeout", elapsed=time.monotonic() - tx.started)
    watch.close()
    return {node: results[node] for node in nodes}
