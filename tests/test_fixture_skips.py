"""A user's tests with netchat.testing on a machine without the server: loud skips, or
failures when a server is required."""

import os
import subprocess
import sys
import textwrap


def run_users_tests(tmp_path, *args, **env):
    (tmp_path / "test_users.py").write_text(textwrap.dedent("""
        def test_one(xmpp_account):
            assert xmpp_account("a").jid

        def test_two(xmpp_server):
            assert xmpp_server.port

        def test_no_server():
            assert True
        """))
    environ = {k: v for k, v in os.environ.items()
               if k not in ("CI", "NETCHAT_REQUIRE_SERVER", "PYTEST_ADDOPTS")}
    environ.update(env, PATH=str(tmp_path))  # no prosody, no openssl here
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "netchat.testing", "-p",
                           "no:cacheprovider", "-q", "-rs", "test_users.py"] + list(args),
                          cwd=str(tmp_path), capture_output=True, text=True, env=environ,
                          timeout=120)


def test_missing_server_skips_loudly(tmp_path):
    result = run_users_tests(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 2 skipped" in result.stdout
    assert "netchat: 2 live test(s) SKIPPED (did not run): " in result.stdout
    assert "--require-xmpp-server" in result.stdout


def test_missing_server_fails_when_required(tmp_path):
    for args, env in (((), {"NETCHAT_REQUIRE_SERVER": "1"}), (("--require-xmpp-server",),
                                                                {}), ((), {"CI": "true"})):
        result = run_users_tests(tmp_path, *args, **env)
        assert result.returncode == 1, (args, env, result.stdout)
        assert "2 errors" in result.stdout or "2 failed" in result.stdout, result.stdout
        assert "a server is required" in result.stdout
