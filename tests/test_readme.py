"""The README is the front door: valid reStructuredText, and its commands exist."""

import os
import re

import docutils.core

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name):
    with open(os.path.join(TOP, name)) as f:
        return f.read()


def test_readme_is_valid_restructuredtext():
    docutils.core.publish_string(read("README.rst"), writer="null",
                                 settings_overrides={"halt_level": 2, "report_level": 2})


def test_readme_commands_exist_and_ci_runs_the_test_command():
    readme = read("README.rst")
    for command in ("scripts/demo", "scripts/test"):
        assert command in readme
        assert os.access(os.path.join(TOP, command), os.X_OK), command
    assert re.search(r"^scripts/test\b", read(".ci/run"), re.M)
    assert "prosody" in readme.lower()
