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


TYPED = textwrap.dedent("""
    from typing import List, Optional
    from rec import Rec

    class Typed(Rec):
        def __init__(self, user, tags: Optional[List[str]] = None, ratio: float = 1.0,
                     **options):
            super().__init__(user, **options)
    """)


@pytest.mark.parametrize("line, says", [
    ('retry = "soon"', 'retry = "soon" is a string; expected a number'),
    ('threads = "two"', 'threads = "two" is a string; expected an integer'),
    ("threads = 2.5", "threads = 2.5 is a float; expected an integer"),
    ("master = true", "master = true is a boolean; expected a string"),
    ('[connection]\nport = "abc"',
     '[connection] port = "abc" is a string; expected an integer'),
    ('[connection]\nverify = "no"',
     '[connection] verify = "no" is a string; expected true or false'),
    ("[connection]\nregister = 1",
     "[connection] register = 1 is an integer; expected true or false"),
    ('[connection]\nhots = "x"', "[connection] takes no key 'hots' (did you mean 'host'?)"),
    ('[connection]\nendpoints = "a:5222"',
     '[connection] endpoints = "a:5222" is a string; expected a list'),
    ('[options]\nmax_age = "1m"', '[options] max_age = "1m" is a string; expected a number'),
    ("[options]\nversion_os = 1", "[options] version_os = 1 is an integer; expected true "
                                  "or false"),
    ("[options]\ntags = [1, 2]", "[options] tags = [1, 2] is a list; expected a list of "
                                 "strings"),
    ('[options]\ncolour = ["red"]', '[options] colour = ["red"] is a list; expected a '
                                    'string'),
])
def test_run_refuses_a_config_value_of_the_wrong_type_before_connecting(tmp_path, line,
                                                                         says):
    (tmp_path / "typed.py").write_text(TYPED)
    (tmp_path / "node.toml").write_text('daemon = "typed.py:Typed"\njid = "n@example.org"'
                                        '\n%s\n' % line)
    result = netchat_run(tmp_path, "--config", "node.toml")
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert result.stderr.startswith("netchat run: config file node.toml: %s" % says)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_run_takes_integers_for_floats_and_well_typed_lists(tmp_path):
    (tmp_path / "typed.py").write_text(TYPED)
    (tmp_path / "node.toml").write_text(textwrap.dedent("""
        daemon = "typed.py:Typed"
        jid = "n@example.org"
        retry = 5
        [connection]
        connect_timeout = 3
        verify = false
        endpoints = ["127.0.0.1:5222", "127.0.0.2:5222"]
        [options]
        ratio = 2
        tags = ["a", "b"]
        """))
    result = netchat_run(tmp_path, "--config", "node.toml", "-o", "max_age=60")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["retry"] == 5 and got["ratio"] == 2 and got["tags"] == ["a", "b"]
    assert got["connection_options"]["connect_timeout"] == 3


def test_run_refuses_an_o_value_of_the_wrong_type(tmp_path):
    result = netchat_run(tmp_path, "rec.py:Rec", "--jid", "n@example.org", "-o",
                         "max_age=soon")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == 'netchat run: -o max_age = "soon" is a string; expected a ' \
                            'number\n'


def test_run_refuses_endpoints_it_cannot_use_before_connecting(tmp_path):
    for table, says in (('endpoints = ["x:0"]', "endpoints: port out of range"),
                        ('host = "h"\nendpoints = ["a:1"]',
                         "give either host/port or endpoints, not both")):
        (tmp_path / "node.toml").write_text('daemon = "rec.py:Rec"\njid = "n@example.org"'
                                            '\n[connection]\n%s\n' % table)
        result = netchat_run(tmp_path, "--config", "node.toml")
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "config file node.toml: [connection] " + says in result.stderr
