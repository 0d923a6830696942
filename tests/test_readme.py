"""The README is the front door: valid reStructuredText, and its commands exist."""

import configparser
import os
import re
import textwrap

import docutils.core

import netchat

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


def code_block_after(readme, marker):
    """The first code block after the text ``marker``, dedented."""
    block = readme.index(".. code-block::", readme.index(marker))
    indent = block - (readme.rfind("\n", 0, block) + 1)
    body = []
    for line in readme[readme.index("\n", block) + 1:].split("\n"):
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return textwrap.dedent("\n".join(body)).strip("\n")


def test_the_offline_daemon_example_runs(tmp_path):
    """The README's OfflineDaemon example is run as it is: it cannot expect a reply
    no daemon it shows gives."""
    code = code_block_after(read("README.rst"), "Handlers without a server")
    assert "OfflineDaemon" in code
    namespace = {}
    exec(compile(code, "README.rst", "exec"), namespace)
    tests = [name for name in namespace if name.startswith("test_")]
    assert tests
    for name in tests:
        namespace[name](tmp_path)


def test_the_install_commands_work_without_pypi():
    """netchat is not on PyPI: the README installs from a checkout or a built wheel,
    and the docs command comes with the extra that brings Sphinx."""
    readme = read("README.rst")
    install = readme[readme.index("\nInstall\n"):readme.index("\nTry it\n")]
    commands = re.findall(r"^    (?:\S+/)?pip (install|wheel) (.*?)(?:\s+#.*)?$", install, re.M)
    assert ("install", "net-chat-daemon") not in commands
    assert ("install", ".") in commands
    wheels = [args for verb, args in commands if args.endswith(".whl")]
    assert wheels == ["dist/net_chat_daemon-*.whl"]   # the name `pip wheel .` gives
    assert any(verb == "wheel" and args.endswith(" .") for verb, args in commands)
    setup = configparser.ConfigParser()
    setup.read(os.path.join(TOP, "setup.cfg"))
    assert setup["metadata"]["name"] == "net-chat-daemon"
    extras = setup["options.extras_require"]
    assert "sphinx" in extras["docs"]
    docs = code_block_after(readme, "needs the ``docs`` extra")
    assert docs.split("\n")[0] == ".venv/bin/pip install -e '.[docs]'"
    assert "-m sphinx" in docs.split("\n")[1]


def test_the_connection_options_the_readme_shows_are_accepted():
    """Every key of a ``connection_options={...}`` in the README is one the Daemon
    takes; ``inline_limit`` is one of them and an attribute of the connection."""
    from netchat.daemon import CONNECTION_OPTIONS
    from netchat.testing import OfflineDaemon
    from netchat.client.upload import INLINE_LIMIT
    readme = " ".join(read("README.rst").split())
    shown = re.findall(r"connection_options=\{([^}]*)\}", readme)
    keys = {key for text in shown for key in re.findall(r'"(\w+)":', text)}
    assert keys and keys <= set(CONNECTION_OPTIONS), keys - set(CONNECTION_OPTIONS)
    assert "``daemon.cxn.inline_limit = 0``" in readme
    bot = OfflineDaemon(netchat.Daemon)
    assert bot.daemon.cxn.inline_limit == INLINE_LIMIT
    assert '``connection_options={"inline_limit": 0}``' in readme
    assert netchat.Connection("a@b", inline_limit=0).inline_limit == 0


def test_the_layout_section_names_every_module():
    text = read("README.rst")
    layout = text[text.index("Layout\n======"):text.index("License\n=======")]
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    missing = []
    for folder in ("netchat", "netchat/xmpp", "netchat/client", "netchat/daemon",
                   "netchat/testing", "netchat/cli"):
        for name in sorted(os.listdir(os.path.join(top, folder))):
            if name.endswith(".py") and name != "__init__.py" and \
                    "``%s``" % name not in layout and "%s/%s" % (folder, name) not in layout:
                missing.append("%s/%s" % (folder, name))
    assert missing == []
