"""`netchat run` options: typed values, unknown names refused, a TOML config file.

A recording daemon class stands in for the real run (no server needed): its ``run``
prints what it was given as JSON and exits."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from netchat.cli.run import check_options, option_names, parse_value
from netchat.cli.common import UsageError
from netchat.demo import MyServer

RECORDER = textwrap.dedent("""
    import json, sys
    import netchat

    class Rec(netchat.Daemon):
        def __init__(self, user, colour="red", **options):
            super().__init__(user, **options)

        @classmethod
        def run(cls, user, retry=None, **options):
            options.pop("password")
            print(json.dumps(dict(options, user=user, retry=retry)))
            sys.exit(0)
    """)


def netchat_run(tmp_path, *args, **env):
    (tmp_path / "rec.py").write_text(RECORDER)
    return subprocess.run([sys.executable, "-m", "netchat", "run"] + list(args),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          cwd=str(tmp_path),
                          env=dict(os.environ, NETCHAT_PASSWORD="pw", **env), timeout=60)


def test_option_values_are_parsed():
    assert parse_value("60") == 60 and parse_value("2.5") == 2.5
    assert parse_value("false") is False and parse_value("True") is True
    assert parse_value("null") is None and parse_value("None") is None
    assert parse_value('["*@example.org", "admin"]') == ["*@example.org", "admin"]
    assert parse_value('{"save": ["admin"]}') == {"save": ["admin"]}
    assert parse_value("/tmp/repo") == "/tmp/repo" and parse_value('"60"') == "60"
    assert parse_value("") == ""


def test_options_are_the_constructor_parameters_of_the_class_and_its_bases():
    names = option_names(MyServer)
    assert {"repository", "max_age", "allow", "acl", "loglevel", "max_body"} <= set(names)
    assert "threads" not in names and "self" not in names
    check_options(MyServer, {"max_age": 60, "repository": "/tmp"})
    with pytest.raises(UsageError, match="did you mean 'max_age'"):
        check_options(MyServer, {"max_ag": 60})
    with pytest.raises(UsageError, match="use --threads"):
        check_options(MyServer, {"threads": 2})


def test_run_passes_typed_options(tmp_path):
    result = netchat_run(tmp_path, "rec.py:Rec", "--jid", "n@example.org", "-o",
                         "max_age=60", "-o", "version_os=false", "-o",
                         'allow=["*@example.org"]', "-o", 'acl={"save": ["admin"]}',
                         "-o", "colour=blue", "--retry", "0")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["max_age"] == 60 and got["version_os"] is False
    assert got["allow"] == ["*@example.org"] and got["acl"] == {"save": ["admin"]}
    assert got["colour"] == "blue" and got["retry"] == 0


def test_run_refuses_an_unknown_option_on_one_line(tmp_path):
    result = netchat_run(tmp_path, "rec.py:Rec", "--jid", "n@example.org", "-o",
                         "max-age=60")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "Rec takes no option 'max-age'" not in result.stderr  # not an identifier
    assert "KEY=VALUE" in result.stderr
    result = netchat_run(tmp_path, "rec.py:Rec", "--jid", "n@example.org", "-o",
                         "colur=blue")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "Rec takes no option 'colur' (did you mean 'colour'?)" in result.stderr


def test_run_reads_a_toml_config_file_and_flags_override_it(tmp_path):
    (tmp_path / "node.toml").write_text(textwrap.dedent("""
        daemon = "rec.py:Rec"
        jid = "n@example.org/r1"
        retry = 300
        threads = 4
        [connection]
        host = "127.0.0.1"
        port = 5999
        [options]
        max_age = 60
        allow = ["*@example.org"]
        acl = { save = ["admin"] }
        """))
    result = netchat_run(tmp_path, "--config", "node.toml", "--port", "6000",
                         "-o", "max_age=5")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["user"] == "n@example.org/r1" and got["retry"] == 300
    assert got["threads"] == 4 and got["acl"] == {"save": ["admin"]}
    assert got["connection_options"] == {"host": "127.0.0.1", "port": 6000}
    assert got["max_age"] == 5
    (tmp_path / "bad.toml").write_text('jid = "n@example.org"\nmax_age = 3\n')
    result = netchat_run(tmp_path, "--config", "bad.toml", "rec.py:Rec")
    assert result.returncode == 2 and "unknown key 'max_age'" in result.stderr


def test_run_with_a_jid_without_domain_is_a_usage_error_as_in_jabber(tmp_path):
    result = netchat_run(tmp_path, "rec.py:Rec", "--jid", "node1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--jid: 'node1' is not a user JID" in result.stderr
