"""The code stays clean: ruff's error, pyflakes and bugbear rules on everything."""

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "E,F,W,B",
         "--ignore", "B905", "--line-length", "100", "netchat", "tests", "bench",
         "scripts/jabber", "scripts/netchat"],
        cwd=TOP, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
