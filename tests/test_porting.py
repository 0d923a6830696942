"""Porting traps from Perl: attachments printed as text, Daemon.run's own log, the
README's porting table."""

import io
import os
import re
import signal

import netchat
from helpers import connect, start_node, stop_process, wait_for
from netchat.testing import OfflineDaemon

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_str_of_a_text_attachment_is_its_text():
    att = netchat.Attachment("remember the milk\n", name="notes.txt")
    out = io.StringIO()
    print(att, file=out, end="")  # Perl: print $fh $file
    assert out.getvalue() == "remember the milk\n"
    assert "%s" % att == "remember the milk\n"
    binary = netchat.Attachment(b"\xff\x00", name="b.bin")
    assert repr(binary) == "Attachment(b'\\xff\\x00', name='b.bin')"  # str() raises
    assert att.text == str(att) and att.bytes == b"remember the milk\n"
    assert att.name == "notes.txt" and att.type == "data"


def test_daemon_run_logs_handler_tracebacks_to_stderr_by_default(xmpp_account):
    node = xmpp_account("node")
    proc = start_node(node, wait_ready=False, mode="run")
    try:
        coord = connect(xmpp_account("coord"))

        def answered():
            try:
                reply = coord.request(node.jid, "raise", timeout=0.5)
                # stored while the node logged in, its whole-second delay stamp can
                # make it look older than it is: expired, not run; ask again
                return None if reply.startswith("expired:") else reply
            except netchat.Timeout:
                return None
            except netchat.RemoteError as exc:  # not online yet: bounced (no-store)
                if not exc.offline:
                    raise
                return None
        reply = wait_for(answered, 15, interval=0.05, message="the node to answer")
        assert reply == "error: RuntimeError: boom"
        coord.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        log = proc.stderr.read()
        assert "Traceback" in log and "RuntimeError: boom" in log  # before: nothing
    finally:
        stop_process(proc)


def porting_table():
    """The README's porting table: ``[(perl, python)]``, each cell's text on one line."""
    with open(os.path.join(TOP, "README.rst")) as f:
        readme = f.read()
    section = readme[readme.index("\nPorting from Perl\n"):]
    section = section[:section.index("\nWhere netchat differs")]
    rows = []
    for row in section.split("\n   * - ")[2:]:       # after the header row
        perl, python = row.split("\n     - ", 1)
        rows.append((" ".join(perl.split()), " ".join(python.split())))
    return rows


def python_of(rows, perl_start):
    """The first literal of the Python cell of the row whose Perl starts so."""
    found = [python for perl, python in rows if perl.startswith(perl_start)]
    assert len(found) == 1, (perl_start, found)
    return re.match(r"``(.*?)``", found[0]).group(1)


def ported(code):
    """A Daemon subclass whose body is ``code`` (a method from the table)."""
    namespace = {}
    exec(code, {}, namespace)
    return type("Ported", (netchat.Daemon,), namespace)


def test_the_porting_tables_handlers_take_what_perl_passed():
    """A Perl handler ignored extra words, and a method's @_ began with $self: the
    table's Python takes what the daemon passes (before: ``hello there`` answered
    ``TypeError ... takes 1 positional argument but 2 were given``)."""
    rows = porting_table()
    hello = python_of(rows, "``sub handleHello")
    assert "*args" in hello
    bot = OfflineDaemon(ported(hello))
    assert bot.ask("hello").text == "hi"
    assert bot.ask("hello there").text == "hi"
    save_perl = [perl for perl, _ in rows if perl.startswith("``sub handleSave")]
    assert save_perl and "my ($self, $file, $att) = @_" in save_perl[0]
    save = python_of(rows, "``sub handleSave")
    bot = OfflineDaemon(ported(save.replace("...", "return file + ': ' + att.text")))
    assert bot.ask("save notes.txt", attachments=["hello"]).text == "notes.txt: hello"


def test_the_porting_tables_constructor_shows_connection_options():
    """Perl's new($user, %opts) took the server settings among its options; netchat
    takes them in connection_options, and the table says so with keys it accepts."""
    from netchat.daemon import CONNECTION_OPTIONS
    new = python_of(porting_table(), "``My::Server->new(")
    assert "connection_options=" in new and "password=" in new
    keys = re.findall(r'"(\w+)":', new)
    assert keys and set(keys) <= set(CONNECTION_OPTIONS), keys
