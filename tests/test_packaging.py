"""What `pip install net-chat-daemon` gets: the wheel and the sdist built from this tree."""

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The sdist and the wheel, built (without network) from a copy of this tree."""
    tmp = tmp_path_factory.mktemp("dist")
    tree = tmp / "tree"
    shutil.copytree(TOP, tree, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis", "_build"))
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist",
                             "--wheel", "--outdir", str(tmp / "out"), str(tree)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    names = sorted(os.listdir(tmp / "out"))
    sdist = [tmp / "out" / n for n in names if n.endswith(".tar.gz")]
    wheel = [tmp / "out" / n for n in names if n.endswith(".whl")]
    assert len(sdist) == 1 and len(wheel) == 1, names
    return sdist[0], wheel[0]


def test_the_distribution_is_net_chat_daemon_typed_for_every_python(dists):
    _, wheel = dists
    assert os.path.basename(wheel).startswith("net_chat_daemon-")
    with zipfile.ZipFile(wheel) as z:
        files = z.namelist()
        metadata = z.read([n for n in files if n.endswith("/METADATA")][0]).decode()
    assert "netchat/py.typed" in files
    assert "netchat/cli/__init__.py" in files
    # the Prosody module for fast uploads (the throwaway Prosody loads it)
    assert "netchat/testing/prosody_plugins/mod_http_read_size.lua" in files
    assert not any(n.startswith("tests/") for n in files)
    assert "Name: net-chat-daemon\n" in metadata
    for minor in range(9, 14):
        assert "Classifier: Programming Language :: Python :: 3.%d\n" % minor in metadata
    assert "Classifier: Typing :: Typed\n" in metadata
    assert "Project-URL: " in metadata
    assert "Requires-Python: >=3.9" in metadata


def test_the_sdist_carries_everything_its_tests_need(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        files = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    here = {"tests/" + n for n in os.listdir(os.path.join(TOP, "tests"))
            if n.endswith(".py")}
    assert here <= files, sorted(here - files)
    for name in ("tests/conftest.py", "tests/helpers.py", "README.rst", "LICENSE",
                 "setup.cfg", "netchat/py.typed",
                 "netchat/testing/prosody_plugins/mod_http_read_size.lua"):
        assert name in files, name
