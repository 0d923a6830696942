"""The admission chain: the checks every request passes, in one order, before its
handler runs: chat requests (:meth:`netchat.daemon.requests.RequestPipeline.handle`) and
XEP-0050 ad-hoc commands (:mod:`netchat.daemon.services`) alike, as Errbot runs its command
filters (the ACL one of them).

Each check takes the :class:`~netchat.daemon.requests.RequestPipeline` and an
:class:`Admission` (what is known of the request so far) and returns None to let it
pass, or the :class:`Outcome` that answers it instead. Two stages, because the
command is known only once the request is parsed, which each kind of request does
its own way (a chat body, or an ad-hoc form):

:data:`BEFORE_PARSING`
    ``allowed`` (the sender is in ``allow``), ``small_enough`` (``max_body``, and
    the parser kept all of it), ``not_a_copy`` (the duplicate memory,
    :mod:`netchat.daemon.dedupe`: a copy is answered with the first one's reply by the
    kind's own ``answer_copy`` and ends as :data:`ANSWERED`), ``in_time`` (the
    deadline its sender gave, :mod:`netchat.client.deadlines`: ``expired``) and
    ``young_enough`` (``max_age`` for a stored request: ``expired``).
:data:`AFTER_PARSING`
    ``may_run`` (``acl``, decided on the handler that would run),
    ``well_formed`` (its attachments could be read: ``error``) and
    ``within_limits`` (``max_args``, ``max_attachment``).

Each kind of request declares its chain from these: :data:`CHAT_CHECKS` (all of
them) and :data:`ADHOC_CHECKS` (no ``young_enough``: servers never store an iq; no
``well_formed``: a command carries no attachments).

A refused request is not remembered as seen: a copy of it is judged again.
"""

import datetime
import time
from typing import (TYPE_CHECKING, Any, Callable, List, NamedTuple, Optional, Sequence,
                    Union)

from ..client.deadlines import request_deadline

if TYPE_CHECKING:  # pragma: no cover
    from .requests import RequestPipeline

__all__ = ["Outcome", "Admission", "ANSWERED", "BEFORE_PARSING", "AFTER_PARSING",
           "Chain", "CHAT_CHECKS", "ADHOC_CHECKS", "first_verdict"]


class Outcome(NamedTuple):
    """What a request comes to: the reply's text and its status (``ok``, ``error``,
    ``denied``, ``too-large``, ``unknown``, ``busy``, ``expired``)."""
    text: str
    status: str


class _Answered:
    def __repr__(self) -> str:
        return "ANSWERED"


#: The verdict on a copy of a request seen recently: answered from the duplicate
#: memory (or left to the first one while it runs); nothing more to do.
ANSWERED = _Answered()

Verdict = Union[None, Outcome, _Answered]


class Admission:
    """What the chain knows of one request.

    :param stanza: the request (a message, or an ad-hoc command's iq); the chain
        marks it with ``netchat_key`` (its entry in the duplicate memory, which its
        reply fills) and ``netchat_deadline``.
    :param size: characters of its text; ``truncated``: what the parser cut short.
    :param thread: what tells it apart from its sender's other requests with the
        same id (a message's thread; an ad-hoc command's node).
    :param valid: its ``<valid/>`` element (None: no deadline); ``delayed``: it
        carries a delay stamp (it was stored).
    :param answer_copy: ``answer_copy(seen)`` answers a copy with what the duplicate
        memory holds for the first (:data:`~netchat.daemon.dedupe.RAN`,
        :data:`~netchat.daemon.dedupe.RUNNING`, or the first one's reply).
    """
    __slots__ = ("stanza", "sender", "size", "truncated", "thread", "valid", "delayed",
                 "answer_copy", "command", "found", "nargs", "attachments", "malformed")

    def __init__(self, stanza: Any, sender: Any, size: int, thread: Optional[str],
                 answer_copy: Callable[[Any], Any], valid: Any = None,
                 delayed: bool = False, truncated: Optional[str] = None):
        self.stanza, self.sender, self.size, self.truncated = stanza, sender, size, truncated
        self.thread, self.valid, self.delayed = thread, valid, delayed
        self.answer_copy = answer_copy
        #: Set once parsed: the command as asked, its handler's entry (None: none),
        #: how many arguments it has and its attachments.
        self.command: Optional[str] = None
        self.found: Any = None
        self.nargs = 0
        self.attachments: List[Any] = []
        #: What was wrong with a part of it that could not be parsed (its
        #: attachments), else None.
        self.malformed: Optional[str] = None


Check = Callable[["RequestPipeline", Admission], Verdict]


def allowed(pipeline: "RequestPipeline", request: Admission) -> Verdict:
    if not pipeline.access.may_command(request.sender):
        return Outcome(pipeline.texts.MSG_DENIED, "denied")
    return None


def small_enough(pipeline: "RequestPipeline", request: Admission) -> Verdict:
    if request.size > pipeline.options.max_body or request.truncated == "body":
        return Outcome(pipeline.texts.MSG_TOO_LARGE % (
            "the request", "%d characters" % pipeline.options.max_body), "too-large")
    if request.truncated:
        return Outcome(pipeline.texts.MSG_TOO_LARGE % (
            "an attachment", "%d bytes" % pipeline.options.max_attachment), "too-large")
    return None


def not_a_copy(pipeline: "RequestPipeline", request: Admission) -> Verdict:
    recent = pipeline.recent
    stanza = request.stanza
    key = recent.key(request.sender, stanza.getID(), request.thread)
    if key is None:
        return None
    seen = recent.claim(key)
    if seen is None:
        stanza.netchat_key = key  # its reply is remembered (RequestPipeline.reply)
        return None
    request.answer_copy(seen)
    return ANSWERED


def in_time(pipeline: "RequestPipeline", request: Admission) -> Verdict:
    if request.valid is None:
        return None
    stanza = request.stanza
    deadline = request_deadline(stanza, valid=request.valid, delayed=request.delayed)
    if deadline is None:
        return None
    stanza.netchat_valid = request.valid
    if time.monotonic() >= deadline:
        return pipeline.expired(stanza)
    stanza.netchat_deadline = deadline  # judged again after a wait for a worker
    return None


def young_enough(pipeline: "RequestPipeline", request: Admission) -> Verdict:
    if pipeline.options.max_age is None or not request.delayed:
        return None
    from ..client.wire import delay_stamp
    stamp = delay_stamp(request.stanza)
    if stamp is None:
        return None
    age = (datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()
    max_age = pipeline.options.max_age
    if age > max_age:
        return Outcome(pipeline.texts.MSG_EXPIRED % (age, max_age), "expired")
    return None


def may_run(pipeline: "RequestPipeline", request: Admission) -> Verdict:
    access = pipeline.access
    # ``allowed`` checked ``allow``; only an ``acl`` can say more
    if access.acl and not access.may_run_command(
            request.sender, request.command or "", pipeline.commands.command_for,
            request.found):
        return Outcome(pipeline.texts.MSG_DENIED, "denied")
    return None


def well_formed(pipeline: "RequestPipeline", request: Admission) -> Verdict:
    if request.malformed is not None:
        return Outcome("error: %s" % request.malformed, "error")
    return None


def within_limits(pipeline: "RequestPipeline", request: Admission) -> Verdict:
    options, texts = pipeline.options, pipeline.texts
    attachments = request.attachments
    if request.nargs + len(attachments) > options.max_args:  # attachments count too
        return Outcome(texts.MSG_TOO_LARGE % (
            "the request", "%d arguments" % options.max_args), "too-large")
    for index, attachment in enumerate(attachments, 1):
        if len(attachment.data) > options.max_attachment:
            return Outcome(texts.MSG_TOO_LARGE % (
                "attachment %d" % index, "%d bytes" % options.max_attachment),
                "too-large")
    return None


BEFORE_PARSING: Sequence[Check] = (allowed, small_enough, not_a_copy, in_time, young_enough)
AFTER_PARSING: Sequence[Check] = (may_run, well_formed, within_limits)



class Chain(NamedTuple):
    """The checks of one kind of request, before and after it is parsed."""
    before_parsing: Sequence[Check]
    after_parsing: Sequence[Check]


#: The chain of a chat request: all of the checks.
CHAT_CHECKS = Chain(BEFORE_PARSING, AFTER_PARSING)
#: The chain of an ad-hoc command: servers never store an iq (no age to judge) and
#: a command carries no attachments (nothing more to read than its form).
ADHOC_CHECKS = Chain((allowed, small_enough, not_a_copy, in_time), (may_run, within_limits))


def first_verdict(checks: Sequence[Check], pipeline: "RequestPipeline",
                  request: Admission) -> Verdict:
    """Run ``checks`` in order: the first verdict that is not None, else None."""
    for check in checks:
        verdict = check(pipeline, request)
        if verdict is not None:
            return verdict
    return None
