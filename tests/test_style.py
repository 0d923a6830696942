"""The code stays clean: ruff's error, pyflakes and bugbear rules on everything (the
settings are in pyproject.toml)."""

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "netchat", "tests", "bench",
         "docs", "scripts/jabber", "scripts/netchat"],
        cwd=TOP, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
