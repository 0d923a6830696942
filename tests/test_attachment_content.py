"""An attachment's content, never its repr: str() of text only, save() byte for byte,
and a clear error once a downloaded file is gone."""

import inspect
import io
import os
import re
import textwrap

import pytest
from xmpp.protocol import Message
from xmpp.simplexml import XML2Node

import netchat
from netchat.attachments import (AttachmentGoneError, AttachmentNotTextError,
                                 attachments_node, parse_attachments)
from helpers import wait_for
from test_cli import jabber

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def received(*items):
    """``items`` as a handler gets them: sent, then parsed back from the stanza."""
    msg = Message(to="node@localhost")
    msg.addChild(node=attachments_node(items))
    return parse_attachments(Message(node=XML2Node(str(msg))))


def test_str_of_text_is_the_text_and_of_bytes_an_error_naming_what_to_call():
    (text,) = received(netchat.Attachment("line one\r\nzwei é\n", name="notes.txt"))
    assert str(text) == "%s" % text == "line one\r\nzwei é\n"
    (binary,) = received(netchat.Attachment(b"\xff\x00", name="b.bin"))
    for convert in (str, lambda a: "%s" % a, lambda a: "{}".format(a),
                    lambda a: print(a, file=io.StringIO())):
        with pytest.raises(AttachmentNotTextError) as raised:
            convert(binary)
        message = str(raised.value)
        assert "'b.bin'" in message and "bytes" in message
        for instead in ("att.save(path)", "att.bytes", "att.text"):
            assert instead in message
    assert isinstance(raised.value, TypeError)
    assert isinstance(raised.value, netchat.AttachmentError)
    assert repr(binary) == "Attachment(b'\\xff\\x00', name='b.bin')"


def test_str_of_a_file_backed_attachment_is_an_error_and_never_reads_the_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("plain UTF-8 text\n")
    att = netchat.Attachment.from_path(str(path))
    with pytest.raises(AttachmentNotTextError, match=r"in a file.*att\.save\(path\)"):
        str(att)
    assert repr(att) == "Attachment.from_path(%r, name='notes.txt')" % str(path)
    path.unlink()  # str() does not look at the file: the same error, not a gone one
    with pytest.raises(AttachmentNotTextError):
        str(att)


def test_save_writes_text_with_crlf_and_binary_byte_for_byte(tmp_path):
    text = "Windows\r\nlines\r\n\tund Umlaute äöü €\r\n"
    binary = bytes(range(256)) * 4
    for att, expected in zip(received(netchat.Attachment(text, name="crlf.txt"),
                                      netchat.Attachment(binary, name="all.bin")),
                             (text.encode("utf-8"), binary)):
        target = tmp_path / att.name
        assert att.save(str(target)) == len(expected)
        assert target.read_bytes() == expected
    assert netchat.Attachment(b"").save(tmp_path / "empty") == 0  # a PathLike too
    assert (tmp_path / "empty").read_bytes() == b""


def test_save_streams_a_file_backed_attachment_without_reading_it_whole(
        tmp_path, monkeypatch):
    data = os.urandom(2 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    att = netchat.Attachment.from_path(str(tmp_path / "big.bin"))

    def whole(self):
        raise AssertionError("read whole into memory")
    for name in ("data", "bytes", "text"):
        monkeypatch.setattr(netchat.Attachment, name, property(whole))
    assert att.save(str(tmp_path / "copy.bin")) == len(data)
    assert (tmp_path / "copy.bin").read_bytes() == data


def test_reading_a_removed_download_says_it_was_removed_and_what_to_do(tmp_path):
    path = tmp_path / "netchat-file-x"
    path.write_bytes(b"notes")
    att = netchat.Attachment.from_path(str(path), name="notes.txt",
                                       url="https://upload.localhost/x/notes.txt")
    assert att.save(str(tmp_path / "kept.txt")) == 5 and att.size == 5
    path.unlink()  # what the daemon does once the reply is sent
    target = tmp_path / "late.txt"
    reads = {"bytes": lambda: att.bytes, "text": lambda: att.text,
             "data": lambda: att.data, "open": att.open, "size": lambda: att.size,
             "save": lambda: att.save(str(target))}
    for what, read in reads.items():
        with pytest.raises(AttachmentGoneError) as raised:
            read()
        assert str(raised.value) == (
            "the file of attachment 'notes.txt' was removed when its request ended; "
            "save it in the handler (att.save(path))"), what
    assert isinstance(raised.value, FileNotFoundError) and not target.exists()
    # a file of one's own (Attachment.from_path) that someone removed: named
    mine = netchat.Attachment.from_path(str(tmp_path / "kept.txt"))
    (tmp_path / "kept.txt").unlink()
    with pytest.raises(AttachmentGoneError, match="'kept.txt' is gone: .*kept.txt$"):
        mine.open()


# -- the README's handleSave, live ------------------------------------------------------

class ReadmeServer(netchat.Daemon):
    """The README's daemon: its ``handleSave`` copied literally, the directory
    ``/var/repository/`` swapped for ``self.repository``."""

    def handleSave(self, filename, file):   # file is a netchat.Attachment
        if not re.fullmatch(r"[.\w]+", filename):
            return "denied"
        file.save(self.repository + filename)   # byte for byte, any size
        return "ok"


class Keeping(ReadmeServer):
    """Keeps each attachment it got, to look at after the request."""

    def handleSave(self, filename, file):
        self.kept[filename] = file
        return super().handleSave(filename, file)


def test_the_readme_handle_save_is_the_one_tested():
    with open(os.path.join(TOP, "README.rst"), encoding="utf-8") as f:
        readme = f.read()
    start = readme.index("        def handleSave(self, filename, file):")
    shown = textwrap.dedent(readme[start:readme.index("\n\n", start)])
    tested = textwrap.dedent(inspect.getsource(ReadmeServer.handleSave)).rstrip("\n")
    assert tested.replace("self.repository + filename",
                          '"/var/repository/" + filename') == shown


def test_readme_handle_save_stores_what_jabber_sends_byte_for_byte(
        daemon_factory, xmpp_account, tmp_path):
    repository = tmp_path / "repository"
    repository.mkdir()
    daemon = daemon_factory(Keeping, "readme", repository=str(repository) + os.sep,
                            kept={})
    line = "a line of text, Zeile mit Umlauten äöü, \tand a CRLF\r\n"
    files = {"notes.txt": (line * (10 * 1024 // len(line) + 1)).encode("utf-8"),
             "all.bin": bytes(range(256)) * 4,
             "big.bin": os.urandom(2 * 1024 * 1024)}  # over the inline limit: uploaded
    sender = xmpp_account("sender")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        result = jabber(sender, "-a", str(tmp_path / name), daemon.jid, "--", "save", name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok", name
        assert (repository / name).read_bytes() == data, name
    assert isinstance(daemon.kept["notes.txt"].data, str)  # each way an attachment comes
    assert isinstance(daemon.kept["all.bin"].data, bytes)
    big = daemon.kept["big.bin"]
    assert big.path is not None and big["url"].startswith("https://")
    # once the reply is sent, the daemon removes the download: reading it says so
    wait_for(lambda: not os.path.exists(big.path), 10, message="the download's removal")
    with pytest.raises(AttachmentGoneError, match="removed when its request ended"):
        big.save(str(tmp_path / "too-late.bin"))
