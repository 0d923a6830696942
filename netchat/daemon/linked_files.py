"""Requests that link files (XEP-0066): fetched off the loop thread, within limits.

The thread in ``process()`` never downloads, so a slow or hostile host cannot hold
the daemon: pings, other requests and their replies go on meanwhile.

- With a worker pool (``threads``), the worker that will run the handler fetches the
  files first; a request waiting for a worker holds no file yet.
- With ``threads=0``, a fetch thread (:data:`FETCH_THREADS` of them) fetches the
  files, then the handler runs in the thread calling ``process()``, as in Perl.

Each distinct URL of a request is fetched once (a URL linked twice gives the same
attachment twice). A request's downloads share one
:class:`~netchat.client.download.Budget`: ``download_request_timeout`` seconds (less when
the request's own deadline comes first: it is then answered ``expired``) and
``max_download`` bytes; ``download_timeout`` bounds each file. A refused or failed
link is answered ``error`` naming it, before any handler runs; the request's files
are removed then, and after its reply otherwise. ``downloads=False`` answers a
request with links ``error`` and fetches nothing. :meth:`LinkedRequests.close`
answers ``busy`` what has not reached its handler yet.
"""

import collections
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Set

from ..client.download import Budget, DownloadError, Link
from ..errors import Disconnected
from .pool import WorkerPool
from ..client.pump import waiting_only

if TYPE_CHECKING:  # pragma: no cover
    from .requests import RequestPipeline

log = logging.getLogger(__name__)

__all__ = ["LinkedRequests", "FETCH_THREADS", "remove_files"]

#: Threads fetching files for a daemon without a worker pool.
FETCH_THREADS = 4


def remove_files(files: Any):
    """Delete the temporary files of fetched attachments (each once)."""
    for path in {attachment.path for attachment in files}:
        try:
            os.unlink(path)
        except OSError:
            pass


class LinkedRequests:
    """Runs the requests of one :class:`~netchat.daemon.requests.RequestPipeline` that link
    files (see the module)."""

    def __init__(self, pipeline: "RequestPipeline"):
        self.pipeline = pipeline
        self.closing = False
        self._lock = threading.Lock()
        self._ready: Deque[Callable[..., Any]] = collections.deque()
        self._fetchers: Optional[WorkerPool] = None
        self._budgets: Set[Budget] = set()

    @property
    def ready(self) -> int:
        """Handlers whose files are here, waiting for the loop thread
        (:meth:`run_ready`)."""
        return len(self._ready)

    def start(self, name: str, words: list, links: List[Link], msg,
              respond: Callable[[str, str], Any], handler: Optional[Callable]) -> Any:
        """Fetch ``links`` for the request ``msg`` (off the loop thread), then run
        ``handler`` (the command ``name``) with ``words`` and the files, and
        ``respond(text, status)``."""
        pipeline = self.pipeline
        if handler is None:
            handler = pipeline.commands.getHandler(name)
        if handler is None:  # nothing to fetch for
            return respond(pipeline.texts.MSG_UNKNOWN_COMMAND % name, "unknown")
        if not pipeline.workers.accepting or self.closing:
            return respond(pipeline.texts.MSG_SHUTTING_DOWN, "busy")
        if not pipeline.options.downloads:
            return respond(pipeline.texts.MSG_NO_DOWNLOADS, "error")
        work = _Fetch(self, name, words, links, msg, respond, handler)
        try:
            pool = pipeline.workers.pool
            if pool is None:
                with self._lock:
                    if self._fetchers is None:
                        self._fetchers = WorkerPool(FETCH_THREADS, pipeline.options.max_pending,
                                                    name="netchat-fetch")
                    pool = self._fetchers
                # what waits for the loop thread counts against the backlog too
                waiting = len(self._ready) + pool.pending + pool.running
                if waiting >= pipeline.options.max_pending:
                    return respond(pipeline.texts.MSG_BUSY % waiting, "busy")
                work.then = self._hand_to_loop
            if not pool.submit(work):
                return respond(pipeline.texts.MSG_BUSY % pool.pending, "busy")
        except Exception as exc:  # a thread that cannot start: answered, never left
            log.exception("[%s] cannot fetch the files of %s", pipeline.cxn.jid, name)
            return respond("error: cannot fetch the linked files: %s: %s" % (
                type(exc).__name__, exc), "error")
        return True

    def fetch(self, links: List[Link], sender, budget: Budget) -> List[Any]:
        """The files ``links`` point to, as file-backed attachments, each distinct URL
        fetched once; on a refusal or failure the ones already fetched are removed
        and :class:`~netchat.client.download.DownloadError` raised."""
        fetched: Dict[str, Any] = {}
        domain = str(sender).split("@", 1)[-1].split("/", 1)[0] if sender else None
        downloader = self.pipeline.downloader
        counts = self.pipeline.counts
        try:
            for link in links:
                if link.url not in fetched:
                    try:
                        fetched[link.url] = downloader.fetch(link, domain, budget=budget)
                    except Exception:
                        counts.downloaded(False)
                        raise
                    counts.downloaded()
        except BaseException:
            remove_files(fetched.values())
            raise
        return [fetched[link.url] for link in links]

    def budget_for(self, msg) -> Budget:
        """The limits of one request's downloads, watched by :meth:`close`."""
        deadline = time.monotonic() + float(self.pipeline.options.download_request_timeout)
        why = "the request's time for its files (%gs, download_request_timeout)" % (
            self.pipeline.options.download_request_timeout)
        sender_deadline = getattr(msg, "netchat_deadline", None)
        if sender_deadline is not None and sender_deadline < deadline:
            deadline, why = sender_deadline, "the time its sender gave the request"
        budget = Budget(deadline, self.pipeline.options.max_download, why)
        with self._lock:
            self._budgets.add(budget)
        if self.closing:
            budget.cancel(self.pipeline.texts.MSG_SHUTTING_DOWN)
        return budget

    def done_with(self, budget: Budget):
        with self._lock:
            self._budgets.discard(budget)

    # -- threads=0: handlers back on the loop thread ---------------------------------------

    def _hand_to_loop(self, run: Callable[..., Any]):
        with self._lock:
            closing = self.closing
            if not closing:
                self._ready.append(run)
        if closing:  # closed meanwhile: answered busy, its files removed
            run(cancelled=True)
            return
        self.pipeline.workers.interrupt()

    def run_ready(self):
        """Run the handlers whose files were fetched (the thread in ``process()``
        calls it)."""
        while self._ready:
            try:
                run = self._ready.popleft()
            except IndexError:
                return
            run()

    def close(self):
        """Stop fetching: what has not reached its handler is answered ``busy``."""
        with self._lock:
            self.closing = True
            budgets = list(self._budgets)
            fetchers, self._fetchers = self._fetchers, None
        for budget in budgets:
            budget.cancel(self.pipeline.texts.MSG_SHUTTING_DOWN)
        if fetchers is not None:
            for work in fetchers.shutdown(1.0):
                work.answer(self.pipeline.texts.MSG_SHUTTING_DOWN, "busy")
        with self._lock:
            ready, self._ready = list(self._ready), collections.deque()
        for run in ready:
            run(cancelled=True)

    def reopen(self):
        """Take requests again (after :meth:`close`, for a daemon reconnected)."""
        self.closing = False


class _Fetch:
    """One request with links: fetch (on a worker or fetch thread), then run."""
    __slots__ = ("owner", "name", "words", "links", "msg", "respond", "handler", "then")

    def __init__(self, owner: LinkedRequests, name: str, words: list, links: List[Link],
                 msg, respond: Callable[[str, str], Any], handler: Callable):
        self.owner, self.name, self.words, self.links = owner, name, words, links
        self.msg, self.respond, self.handler = msg, respond, handler
        #: Where the handler runs once the files are here (None: on this thread).
        self.then: Optional[Callable[[Callable[..., Any]], None]] = None

    def __call__(self):
        if self.then is not None:  # a fetch thread: it never reads the connection,
            with waiting_only():   # so handlers run only where process() runs them
                files = self._fetch()
        else:
            files = self._fetch()
        if files is None:
            return
        if self.then is None:
            self._run(files)
        else:
            self.then(lambda cancelled=False: self._run(files, cancelled))

    def _fetch(self) -> Optional[List[Any]]:
        owner, msg = self.owner, self.msg
        pipeline = owner.pipeline
        budget = owner.budget_for(msg)
        try:
            return owner.fetch(self.links, msg.getFrom(), budget)
        except DownloadError as exc:
            if budget.cancelled:
                self.answer(pipeline.texts.MSG_SHUTTING_DOWN, "busy")
            elif time.monotonic() >= budget.deadline and \
                    getattr(msg, "netchat_deadline", None) == budget.deadline:
                self.answer(*pipeline.expired(msg))
            else:
                log.warning("[%s] %s from %s: %s", pipeline.cxn.jid, self.name, msg.getFrom(),
                            exc)
                self.answer("error: %s" % exc, "error")
        except Exception as exc:  # whatever fails, the request is answered (and so
            # recorded as answered in the duplicate memory, never left running)
            log.exception("[%s] fetching the files of %s from %s failed", pipeline.cxn.jid,
                          self.name, msg.getFrom())
            self.answer("error: fetching the linked files failed: %s: %s" % (
                type(exc).__name__, exc), "error")
        finally:
            owner.done_with(budget)
        return None

    def _run(self, files: List[Any], cancelled: bool = False):
        try:
            if cancelled:
                self.answer(self.owner.pipeline.texts.MSG_SHUTTING_DOWN, "busy")
                return
            text, status = self.owner.pipeline.call_handler(
                self.handler, self.name, self.words + files, self.msg)
            self.answer(text, status)
        finally:
            remove_files(files)

    def answer(self, text: str, status: str):
        """Send the request's reply; a failure to send is logged, never raised."""
        try:
            self.respond(text, status)
        except Disconnected as exc:
            log.warning("reply to %s lost: %s", self.msg.getFrom(), exc)
        except Exception:
            log.exception("replying to %r from %s failed", self.name, self.msg.getFrom())
