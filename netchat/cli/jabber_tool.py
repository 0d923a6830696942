"""``jabber``: send a request to daemons and print the replies."""

import argparse
import logging
import os
import sys
from typing import List, Optional, Sequence

from ..version import __version__
from ..attachments import Attachment
from ..errors import AuthError, ConnectError, Disconnected, RemoteError, Timeout
from ..client.upload import INLINE_LIMIT, UploadError
from ..client.wire import check_xml_text
from .common import (EXIT_CONNECT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE,
                     UsageError,
                     add_connection_arguments, check_jid, connection_options,
                     failure_hint, read_password, setup_logging)

log = logging.getLogger(__name__)


def quote_word(word: str) -> str:
    """Quote one word for netchat's body parser (so it stays one argument)."""
    if word and not any(c.isspace() or c in "'\"" for c in word):
        return word
    return "'%s'" % word.replace("\\", "\\\\").replace("'", "\\'")


def join_message(words: Sequence[str]) -> str:
    """The message for the words after ``--``: one word as it is, several joined with
    the ones holding spaces or quotes quoted."""
    if len(words) == 1:
        return words[0]
    return " ".join(quote_word(w) for w in words)


def load_attachment(path: str, inline_limit: int = INLINE_LIMIT) -> Attachment:
    """A file as an attachment: text as it is, anything else as bytes (base64); a
    file over ``inline_limit`` bytes (0: any file) is left on disk
    (:meth:`Attachment.from_path`), to go through the server's upload service."""
    try:
        if inline_limit <= 0 or os.path.getsize(path) > inline_limit:
            return Attachment.from_path(path)
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError("cannot read attachment %s: %s" % (path, exc.strerror)) from None
    name = os.path.basename(path)
    try:
        text = data.decode("utf-8")
        check_xml_text(text)
        return Attachment(text, name=name)
    except (UnicodeDecodeError, ValueError):
        return Attachment(data, name=name)


def _jabber_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jabber",
        usage="jabber [options] TO [TO...] -- MESSAGE...\n"
              "       jabber [options] TO [TO...] -- -      (message from stdin)\n"
              "       jabber [options] --room ROOM [--batch K] -- MESSAGE...",
        description="Send MESSAGE as a request to each TO (a JID, or a user id on the "
                    "sender's server) and print the replies: the reply alone for one "
                    "TO, 'TO: reply' lines for several. With --room, to everyone else "
                    "in that room, as a table: node, status, reply, ms.",
        epilog="One word after -- is sent as it is; several words are joined with "
               "spaces, quoting words that hold spaces or quotes, so 'save \"my "
               "file\"' stays two arguments. Exit status: 0 every TO replied; 1 some "
               "timed out, were offline or answered with an error (named on stderr; "
               "with --room, in the table), or the room refused us or was empty; "
               "2 usage; 3 connection or authentication failure, or the server closed the "
               "connection; 130 interrupted (Ctrl-C).")
    parser.add_argument("targets", nargs="*", metavar="TO", help=argparse.SUPPRESS)
    parser.add_argument("-u", "--user", dest="user_jid",
                        help="your JID, user@domain (default: $NETCHAT_USER)")
    parser.add_argument("-r", "--resource", help="your resource (default: jabber-PID)")
    parser.add_argument("-s", "--subject", help="subject of the request")
    parser.add_argument("-a", "--attach", metavar="FILE", action="append", default=[],
                        help="attach FILE (repeatable): in the message (text as it is, "
                             "binary files base64-encoded) up to %d KiB, larger ones "
                             "through the server's upload service (XEP-0363) as a link"
                             % (INLINE_LIMIT // 1024))
    parser.add_argument("--upload", action="store_true",
                        help="send every attached file through the upload service")
    parser.add_argument("-t", "--timeout", type=float, default=30.0,
                        help="seconds to wait for the replies (default 30)")
    parser.add_argument("--room", metavar="ROOM",
                        help="ask everyone else in ROOM (room@service, XEP-0045; you "
                             "must be one of its members) instead of TOs, each at its "
                             "real JID, and print a table sorted by node")
    parser.add_argument("--batch", type=int, metavar="K",
                        help="with --room: ask K members at a time, each batch with "
                             "its own --timeout")
    parser.add_argument("--no-wait", action="store_true",
                        help="send and exit without waiting for replies")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log the conversation and show tracebacks")
    parser.add_argument("--version", action="version", version="jabber (netchat %s)"
                        % __version__)
    add_connection_arguments(parser, register=False)
    return parser


def jabber_main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _jabber_parser()
    if "--" in argv:
        cut = argv.index("--")
        argv, words = argv[:cut], argv[cut + 1:]
    else:
        words = None
    args = parser.parse_args(argv)
    args.user_given = args.user_jid is not None
    if not args.user_given:
        args.user_jid = os.environ.get("NETCHAT_USER")
    setup_logging(args.verbose, register_note="(asked for with --register)")
    try:
        return _jabber(args, words, parser)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print("jabber: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except ConnectError as exc:
        if args.verbose:
            log.exception("connection failed")
        hint = failure_hint(exc, args.ca_file)
        if isinstance(exc, AuthError) and not args.register and "not-authorized" in str(exc):
            hint = " (a new account? --register creates it)"
        print("jabber: %s%s" % (exc, hint), file=sys.stderr)
        return EXIT_CONNECT
    except Disconnected as exc:
        print("jabber: %s" % exc, file=sys.stderr)
        return EXIT_CONNECT
    except UploadError as exc:
        print("jabber: %s" % exc, file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("jabber: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.verbose:
            raise
        print("jabber: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return EXIT_FAILED


def _jabber(args, words, parser) -> int:
    from ..jabber import Connection
    targets = list(args.targets)
    if words is None:
        if targets and targets[-1] == "-":
            targets, words = targets[:-1], ["-"]
        else:
            raise UsageError("put the message after --, or - to read it from stdin")
    if args.room is not None:
        check_room(args, targets)
    elif args.batch is not None:
        raise UsageError("--batch goes with --room")
    elif not targets:
        raise UsageError("say whom to send to (TO), or --room ROOM")
    for to in targets:
        if not to.strip():
            raise UsageError("an empty TO (%r): give a JID or a user id" % to)
        check_jid(to, "TO", user=False)
    if not args.user_jid:
        raise UsageError("say who you are: -u user@domain or $NETCHAT_USER")
    check_jid(args.user_jid, "-u" if args.user_given else "$NETCHAT_USER")
    if words == ["-"]:
        message = sys.stdin.read().rstrip("\n")
    elif words:
        message = join_message(words)
    else:
        raise UsageError("the message is empty")
    try:
        check_xml_text(message, "the message")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    inline_limit = 0 if args.upload else INLINE_LIMIT
    attachments = [load_attachment(path, inline_limit) for path in args.attach]
    password = read_password("jabber", args)
    options = connection_options(args)
    options["resource"] = args.resource or "jabber-%d" % os.getpid()
    options["ping_interval"] = 0
    try:
        conn = Connection(args.user_jid, password, **options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    conn.inline_limit = inline_limit
    conn.connect()
    try:
        if args.room is not None:
            return ask_room(conn, args.room, message, args, attachments)
        if args.no_wait:
            for to in targets:
                conn.post(to, message, subject=args.subject, attachments=attachments)
            return EXIT_OK
        if len(targets) == 1:
            return _ask_one(conn, targets[0], message, args, attachments)
        return _ask_many(conn, targets, message, args, attachments)
    finally:
        conn.close()


#: What a user is told when the target's server bounced the request (no-store).
MSG_OFFLINE = "offline: the request was not kept, and will not run later"

#: Error conditions a server answers a message to an account that does not exist with.
NO_SUCH_ACCOUNT = ("service-unavailable", "item-not-found", "recipient-unavailable")


def describe_error(condition: str) -> str:
    """An error stanza's condition, for people."""
    if condition in NO_SUCH_ACCOUNT:
        return "no such account (%s)" % condition
    return condition


def _ask_one(conn, to, message, args, attachments) -> int:
    from ..client.transactions import bounced_offline
    from ..client.wire import reply_status
    from ..xmpp.parser import error_condition
    replies = []
    try:
        conn.send_request(to, message, onReply=lambda m, t: replies.append(m),
                          subject=args.subject, attachments=attachments,
                          onError=lambda m, t: replies.append(m), timeout=args.timeout)
        conn.barrier(args.timeout)
    except Timeout:
        print("jabber: %s: no reply within %gs" % (to, args.timeout), file=sys.stderr)
        return EXIT_FAILED
    except Disconnected:  # the link died and took the request with it
        replies = []
    if not replies:
        raise Disconnected("%s: no reply: the server closed the connection" % to)
    reply = replies[0]
    if reply.getType() == "error":
        condition, text = error_condition(reply)
        detail = MSG_OFFLINE if bounced_offline(condition, text) \
            else describe_error(condition)
        print("jabber: %s: %s" % (to, detail), file=sys.stderr)
        return EXIT_FAILED
    status = reply_status(reply) or "ok"
    if status != "ok":
        print("jabber: %s: %s (%s)" % (to, reply.getBody() or "", status), file=sys.stderr)
        return EXIT_FAILED
    print(reply.getBody() or "")
    return EXIT_OK


def describe_reply(reply, timeout: float) -> str:
    """What a :class:`~netchat.Reply` of ``requestAll`` says, for people: the body
    when it is ``ok``, else what went wrong."""
    if reply.status == "ok":
        return reply.body or ""
    if reply.status == "timeout":
        return "no reply within %gs" % timeout
    if reply.status == "offline":
        return MSG_OFFLINE if reply.condition else "offline (not asked)"
    if reply.condition in NO_SUCH_ACCOUNT:
        return describe_error(reply.condition)
    return "%s (%s)" % (reply.body, reply.condition or "error")


def _ask_many(conn, targets, message, args, attachments) -> int:
    replies = conn.requestAll(targets, message, args.timeout, attachments=attachments,
                              subject=args.subject)
    failed = 0
    for to in targets:
        reply = replies[to]
        if reply.status == "ok":
            print("%s: %s" % (to, reply.body))
            continue
        failed += 1
        print("jabber: %s: %s" % (to, describe_reply(reply, args.timeout)),
              file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# -- --room: everyone else in a room, as a table -------------------------------------------

def check_room(args, targets):
    """The --room options, before anything connects."""
    if targets:
        raise UsageError("give TO or --room, not both")
    if args.no_wait:
        raise UsageError("--no-wait does not go with --room (its table needs the replies)")
    if args.batch is not None and args.batch < 1:
        raise UsageError("--batch must be at least 1, not %d" % args.batch)
    args.room = check_jid(args.room, "--room")
    if "/" in args.room:
        raise UsageError("--room: %r is not a room JID (room@service, without a "
                         "/resource)" % args.room)


def ask_room(conn, room, message, args, attachments) -> int:
    """Join ``room``, ask everyone else in it (``--batch`` at a time) and print the
    table; a room that refuses us, does not answer or holds nobody else is one line
    on stderr, exit 1."""
    from ..client.rooms import log as rooms_log  # the logger of the room checks and joins
    level = rooms_log.level
    if not args.verbose:  # a refusal is said once, below, not also logged
        rooms_log.setLevel(logging.ERROR)
    try:
        joined = conn.joinRoom(room)
    except (RemoteError, Timeout) as exc:
        hint = " (are you one of its members?)" if "registration-required" in str(exc) \
            else ""
        print("jabber: %s%s" % (exc, hint), file=sys.stderr)
        return EXIT_FAILED
    finally:
        rooms_log.setLevel(level)
    targets = conn.room_targets(room)  # real bare JID -> real full JID
    if not targets:
        # a room nobody made is made now (and gone when we leave): not members-only
        why = " (%s)" % joined.why if joined.trusted is False else ""
        print("jabber: room %s: nobody else is in it%s" % (joined.jid, why),
              file=sys.stderr)
        return EXIT_FAILED
    nodes = sorted(targets)
    size = args.batch or len(nodes)
    progress = Progress(len(nodes)) if sys.stderr.isatty() else None
    replies: dict = {}
    try:
        for start in range(0, len(nodes), size):
            batch = [targets[node] for node in nodes[start:start + size]]
            answers = conn.requestAll(batch, message, args.timeout,
                                      attachments=attachments, subject=args.subject)
            replies.update(zip(nodes[start:start + size], (answers[jid] for jid in batch)))
            if progress is not None:
                progress.show(replies)
    finally:
        if progress is not None:
            progress.clear()
    rows = []
    for node in nodes:
        reply = replies[node]
        if reply.status == "error" and reply.condition in (None, "error"):
            text = reply.body  # the status column says it already
        else:
            text = describe_reply(reply, args.timeout)
        rows.append((node, reply.status, text, reply.elapsed))
    print_table(rows)
    failed = sum(reply.status != "ok" for reply in replies.values())
    if failed:
        print("jabber: %d of %d in %s did not answer ok" % (failed, len(nodes),
                                                            joined.jid), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


class Progress:
    """``12/50 answered`` on the terminal's stderr, rewritten in place."""

    def __init__(self, total: int):
        self.total = total
        self.show({})

    def show(self, replies: dict):
        answered = sum(r.message is not None for r in replies.values())
        sys.stderr.write("\r\x1b[K%d/%d answered" % (answered, self.total))
        sys.stderr.flush()

    def clear(self):
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


#: How wide the reply column is padded at most (a longer reply pushes its ms along).
REPLY_WIDTH = 60


def print_table(rows):
    """Rows of (node, status, reply, seconds) as columns: node, status, reply, ms; a
    reply of several lines continues under its column."""
    cells = [(node, status, (reply or "").splitlines() or [""], "%d" % round(secs * 1000))
             for node, status, reply, secs in rows]
    node_w = max([len("node")] + [len(c[0]) for c in cells])
    status_w = max([len("status")] + [len(c[1]) for c in cells])
    reply_w = min(REPLY_WIDTH, max([len("reply")] + [len(line) for c in cells
                                                     for line in c[2]]))
    ms_w = max([len("ms")] + [len(c[3]) for c in cells])
    line = "%%-%ds  %%-%ds  %%-%ds  %%%ds" % (node_w, status_w, reply_w, ms_w)
    print(line % ("node", "status", "reply", "ms"))
    for node, status, lines, ms in cells:
        print(line % (node, status, lines[0], ms))
        for more in lines[1:]:
            print("%s  %s" % (" " * (node_w + 2 + status_w), more))
