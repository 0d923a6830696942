"""Handlers tested without a server (netchat.testing.OfflineDaemon), and loop_start."""

import textwrap
import threading

import pytest

import netchat
from netchat import Attachment, CommandError
from netchat.testing import OfflineDaemon


class Notes(netchat.Daemon):
    def handleSave(self, name, *files):
        """save NAME [FILE]: keep a file"""
        self.saved[name] = files[0].text if files else ""
        return "saved %s" % name

    def handleShow(self, name):
        if name not in self.saved:
            raise CommandError("no note %r" % name)
        return self.saved[name]

    def handleBoom(self):
        raise RuntimeError("broken")

    def handleWho(self):
        return str(self.last_message.getFrom())


def make(**options):
    return OfflineDaemon(Notes, saved={}, **options)


def test_ask_runs_a_handler_with_attachments_and_returns_its_reply():
    bot = make()
    reply = bot.ask("save notes.txt", attachments=[Attachment("hello", name="n.txt")])
    assert reply == ("saved notes.txt", "ok", reply.message)
    assert bot.daemon.saved == {"notes.txt": "hello"}
    assert bot.ask("show notes.txt").text == "hello"


def test_ask_gives_the_same_errors_help_and_refusals_as_live():
    bot = make(acl={"save": ["admin"]}, max_args=2)
    assert bot.ask("show nothing")[:2] == ("no note 'nothing'", "error")
    assert bot.ask("boom").text == "error: RuntimeError: broken"
    assert bot.ask("nosuch").status == "unknown"
    assert bot.ask("'unterminated").status == "error"
    assert bot.ask("help").text == "Available commands: boom help save show who"
    assert bot.ask("help save").text == "save NAME [FILE]: keep a file"
    assert bot.ask("Save x").status == "denied"                  # acl, any spelling
    assert bot.ask("save x", sender="admin@localhost/a").status == "ok"
    assert bot.ask("show a b c").status == "too-large"           # max_args
    assert bot.ask("who", sender="someone@localhost/r").text == "someone@localhost/r"
    assert bot.ask("who", sender="stranger@elsewhere.org/r").status == "denied"


def test_ask_with_a_worker_pool():
    with make(threads=2) as bot:
        assert bot.ask("save a", attachments=["x"]).text == "saved a"
        assert bot.daemon.pool is not None


def test_a_request_that_is_never_answered_fails_the_ask():
    class Silent(Notes):
        def onRequest(self, msg, **extra):
            return None
    bot = OfflineDaemon(Silent, saved={})
    with pytest.raises(AssertionError, match="no reply"):
        bot.ask("save a", timeout=0.2)


def test_loop_start_runs_process_on_a_background_thread():
    calls = threading.Event()

    class Target:
        jid = "t@x"

        def __init__(self):
            self.count = 0

        def process(self, timeout):
            self.count += 1
            if self.count == 3:
                calls.set()
            return 0 if self.count < 5 else None   # the link "dies" on the 5th

        def interrupt(self):
            pass
    loop = netchat.BackgroundLoop(Target())
    assert calls.wait(5)
    loop.thread.join(5)
    assert not loop.running and list(loop.results) == [0, 0, 0, 0, None]
    assert loop.stop()


def test_daemon_loop_start_and_stop():
    bot = make()
    loop = bot.daemon.loop_start(timeout=0.01)
    assert loop.running
    bot.daemon.loop_stop()
    assert not loop.running and loop.error is None


def test_poll_and_wait_end_the_process_when_a_worker_exits():
    class Quits(Notes):
        def handleQuit(self):
            raise SystemExit(3)
    bot = OfflineDaemon(Quits, saved={}, threads=1)
    with pytest.raises(AssertionError):
        bot.ask("quit", timeout=0.5)       # no reply: the handler ended the process
    with pytest.raises(SystemExit) as exited:
        bot.daemon.poll()                    # goes through Daemon.process
    assert exited.value.code == 3 and bot.daemon.closed


def test_the_daemons_connection_methods_match_the_connections():
    import inspect
    bot = make()
    for name in ("post", "send_request", "request", "open_request", "requestAll",
                 "barrier", "subscribe", "joinRoom", "roomMembers", "createRoom",
                 "ping", "count_transactions", "start_transaction", "end_transaction"):
        assert inspect.signature(getattr(netchat.Daemon, name)) == \
            inspect.signature(getattr(netchat.Connection, name)), name
    errors = []
    tx = bot.daemon.start_transaction("tid-x", to="node@localhost",
                                      onError=lambda m, t: errors.append(t))
    assert tx.to == "node@localhost" and tx.on_error is not None
    assert bot.daemon.count_transactions() == 1
    assert bot.daemon.end_transaction("tid-x") is None and not bot.daemon.count_transactions()


class Sizes(netchat.Daemon):
    def handleSave(self, name, file):
        return "%s: %d bytes, %s" % (name, len(file.bytes), file.name)


def test_ask_sends_attachments_over_the_inline_limit_inline(tmp_path):
    """Past the connection's inline_limit (128 KiB) a live sender uploads the file;
    offline there is no upload service, so ask() sends it inline whatever its size
    (before: a Timeout from asking the absent server for its upload service)."""
    from netchat.client.upload import INLINE_LIMIT
    bot = OfflineDaemon(Sizes)
    big = bytes(range(256)) * (INLINE_LIMIT // 256 + 100)
    assert bot.ask("save big", attachments=[big]).text == \
        "big: %d bytes, None" % len(big)
    path = tmp_path / "photo.jpg"
    path.write_bytes(big)
    reply = bot.ask("save p", attachments=[Attachment.from_path(str(path))])
    assert reply == ("p: %d bytes, photo.jpg" % len(big), "ok", reply.message)
    huge = b"x" * (1024 * 1024 + 1)       # over max_attachment (1 MiB): as live inline
    assert bot.ask("save h", attachments=[huge]).status == "too-large"
    roomy = OfflineDaemon(Sizes, max_attachment=4 * 1024 * 1024)
    assert roomy.ask("save h", attachments=[huge]).text == "h: %d bytes, None" % len(huge)


def test_the_example_in_the_modules_docstring_runs(tmp_path):
    import netchat.testing.offline as offline
    code = offline.__doc__.split("::\n", 1)[1].split("\nWhat the daemon sends", 1)[0]
    namespace = {}
    exec(compile(textwrap.dedent(code), offline.__file__, "exec"), namespace)
    namespace["test_save"](tmp_path)
