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


#: module -> the name it logs under, where that is not its own: the audit trail keeps
#: the name operators route (``netchat.audit``)
OWN_LOGGER_NAMES = {"netchat.daemon.audit": "netchat.audit"}


def test_every_module_logs_under_its_own_name_below_netchat():
    # logging.getLogger(__name__): a log line says which module wrote it, and the level
    # of the "netchat" logger governs them all (none sets a level of its own)
    import importlib
    import logging
    import pkgutil

    import netchat
    found = {}
    for info in pkgutil.walk_packages(netchat.__path__, "netchat."):
        if info.name.endswith("__main__"):  # running it is the command line
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, logging.Logger):
                found[info.name] = value
    assert "netchat.daemon.core" in found and "netchat.daemon.audit" in found
    top = logging.getLogger("netchat")
    level = top.level
    top.setLevel(7)  # a level nothing else uses
    try:
        for name, logger in found.items():
            assert logger.name == OWN_LOGGER_NAMES.get(name, name), (name, logger.name)
            assert logger.getEffectiveLevel() == 7, name
    finally:
        top.setLevel(level)
