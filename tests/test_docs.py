"""The API reference (docs/) builds with Sphinx without a single warning, and
documents what a newcomer looks up.

Sphinx is in the ``test`` extra; without it these tests fail rather than skip."""

import html
import inspect
import os
import re
import subprocess
import sys

import pytest

import netchat
import netchat.jabber
import netchat.testing.plugin
from netchat.client.loop import LoopMethods
from netchat.client.request_commands import RequestCommands

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The HTML reference, built once for the module: its output directory."""
    tmp = tmp_path_factory.mktemp("docs")
    out = tmp / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp / "doctrees"), os.path.join(TOP, "docs"), str(out)],
        cwd=TOP, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    return out


def page(built, name):
    """The HTML of page ``name`` ("" when there is no such page)."""
    path = built / ("%s.html" % name)
    if not path.exists():
        return ""
    with open(path) as f:
        return f.read()


def test_the_api_reference_builds_without_warnings(built):
    front = page(built, "index")
    assert "A daemon in a few lines" in front          # the README is the front page
    package = page(built, "api/netchat")
    for name in ("Daemon", "Connection", "Reply", "Attachment", "NetChatError"):
        assert 'id="netchat.%s"' % name in package, name
    assert 'id="netchat.Daemon.request"' in package
    for module in ("testing", "commands", "access", "wire", "errors", "attachments",
                   "jabber"):
        assert os.path.exists(built / "api" / ("%s.html" % module)), module


def _words(text):
    return re.findall(r"\w+", text)


def _rendered(docstring):
    """The words of a docstring's first paragraph as Sphinx renders them (roles such
    as :class:`~netchat.Connection` show their last part)."""
    first = inspect.cleandoc(docstring).split("\n\n")[0]
    first = re.sub(r":[\w:]+:`~[\w.]*?(\w+)`", r"\1", first)
    first = re.sub(r":[\w:]+:`([^`<]*?)\s*(?:<[^>]*>)?`", r"\1", first)
    return _words(first)


def _description(html_text, target):
    """The words of the description Sphinx wrote for the object whose id is
    ``target`` (empty when there is none)."""
    start = html_text.find('id="%s"' % target)
    if start < 0:
        return None
    dd = html_text.find("<dd>", start)
    end = html_text.find("</dd>", dd)
    return _words(html.unescape(re.sub(r"<[^>]+>", " ", html_text[dd:end])))


# (page, id in the page, the object whose docstring must be there)
DOCUMENTED = [("api/netchat", "netchat.client.request_commands.RequestCommands.%s" % name,
               getattr(RequestCommands, name))
              for name in ("request", "requestAll", "open_request", "ping",
                           "count_transactions", "start_transaction", "barrier",
                           "send_request")]
DOCUMENTED += [("api/netchat", "netchat.Daemon.%s" % name, getattr(netchat.Daemon, name))
               for name in ("request", "requestAll", "ping", "count_transactions",
                            "start_transaction")]
DOCUMENTED += [("api/netchat", "netchat.client.loop.LoopMethods.%s" % name,
                getattr(LoopMethods, name))
               for name in ("loop_start", "loop_stop", "poll", "wait")]
DOCUMENTED += [("api/jabber", "netchat.jabber.%s" % name, getattr(netchat.jabber, name))
               for name in ("user_id", "bare_jid", "parse_user")]
DOCUMENTED += [("api/testing", "netchat.testing.plugin.%s" % name,
                getattr(netchat.testing.plugin, name))
               for name in ("xmpp_server", "xmpp_account", "server_factory",
                            "prosody_server", "ejabberd_cluster")]
DOCUMENTED += [("api/testing", "netchat.testing.%s" % name,
                getattr(netchat.testing, name))
               for name in ("OfflineDaemon", "OfflineReply")]


def test_the_reference_documents_each_call_a_newcomer_looks_up(built):
    """The coordinator's calls, the Perl porter's ``netchat.jabber.user_id`` and the
    pytest fixtures are in the built HTML, each with its docstring."""
    missing = []
    pages = {}
    for name, target, obj in DOCUMENTED:
        html_text = pages.setdefault(name, page(built, name))
        described = _description(html_text, target)
        words = _rendered(obj.__doc__ or "")
        assert words, "%s has no docstring" % target
        if described is None:
            missing.append("%s (not on %s)" % (target, name))
        elif " ".join(words[:8]) not in " ".join(described):
            missing.append("%s (without its docstring: %r)" % (target, described[:12]))
    assert not missing, missing


def _ids(built):
    """Every ``id="..."`` in the built HTML reference."""
    found = set()
    for path in built.rglob("*.html"):
        found.update(re.findall(r'id="([\w.]+)"', path.read_text(encoding="utf-8")))
    return found


def _public_methods(cls):
    """``cls``'s public methods and properties defined by netchat (``name``, the class
    that defines it)."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next(k for k in cls.__mro__ if name in k.__dict__)
        value = owner.__dict__[name]
        if not owner.__module__.startswith("netchat"):
            continue
        if isinstance(value, (staticmethod, classmethod, property)) or \
                inspect.isfunction(value):
            yield name, owner


def test_every_public_name_is_in_the_reference(built):
    """What ``netchat`` exports and every public method of ``Daemon`` and
    ``Connection`` has an entry in the built reference: under the class itself, or
    under the (documented) base that defines it."""
    ids = _ids(built)
    missing = ["netchat.%s" % name for name in netchat.__all__
               if "netchat.%s" % name not in ids]
    for cls in (netchat.Daemon, netchat.Connection):
        for name, owner in _public_methods(cls):
            own = "netchat.%s.%s" % (cls.__name__, name)
            base = "%s.%s.%s" % (owner.__module__, owner.__qualname__, name)
            if own not in ids and base not in ids:
                missing.append(own)
    assert not missing, "not in the API reference: %s" % ", ".join(sorted(missing))
