"""The API reference (docs/) builds with Sphinx without a single warning.

Sphinx is in the ``test`` extra; without it this test fails rather than skips."""

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_api_reference_builds_without_warnings(tmp_path):
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), os.path.join(TOP, "docs"), str(out)],
        cwd=TOP, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    with open(out / "index.html") as f:
        front = f.read()
    assert "A daemon in a few lines" in front          # the README is the front page
    with open(out / "api" / "netchat.html") as f:
        package = f.read()
    for name in ("Daemon", "Connection", "Reply", "Attachment", "NetChatError"):
        assert 'id="netchat.%s"' % name in package, name
    assert 'id="netchat.Daemon.request"' in package
    for module in ("testing", "commands", "access", "wire", "errors", "attachments"):
        assert os.path.exists(out / "api" / ("%s.html" % module)), module
