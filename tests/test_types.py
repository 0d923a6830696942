"""The package type-checks (mypy, with the settings in pyproject.toml)."""

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mypy_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", os.devnull], cwd=TOP,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
