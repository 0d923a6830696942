"""Porting traps from Perl: attachments printed as text, Daemon.run's own log."""

import io
import signal

import netchat
from helpers import connect, start_node, stop_process, wait_for


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
