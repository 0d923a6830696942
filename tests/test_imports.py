"""What ``import netchat`` loads: xmpppy's stanza and dispatcher modules only (not its
HTTP/BOSH transports, email, auth, roster...), and still the whole ``xmpp`` package for a
user who imports it later. Each check runs in a fresh interpreter."""

import json
import os
import subprocess
import sys
import textwrap

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: modules an idle netchat process must not hold (xmpppy's __init__.py pulls them in)
UNUSED = ["http.client", "email", "email.parser", "gzip", "xmpp.transports", "xmpp.auth",
          "xmpp.roster", "xmpp.features", "xmpp.browser", "xmpp.filetransfer",
          "xmpp.commands", "dns", "DNS"]


def run(code: str, timeout: float = 60) -> dict:
    """Run ``code`` in a fresh interpreter (this tree's netchat first on the path); it
    prints one JSON line, returned."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=TOP,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_netchat_loads_no_http_email_or_unused_xmpp_modules():
    found = run("""
        import json, sys
        import netchat
        print(json.dumps(sorted(sys.modules)))
        """)
    assert [name for name in UNUSED if name in found] == []
    for name in ("xmpp", "xmpp.simplexml", "xmpp.protocol", "xmpp.client",
                 "xmpp.dispatcher"):
        assert name in found


def test_a_later_import_xmpp_is_the_whole_package_with_netchats_classes():
    found = run("""
        import json, sys, types
        import netchat
        import netchat.daemon, netchat.xmpp.stream
        import xmpp
        before = "http.client" in sys.modules
        made = xmpp.Client("example.org", debug=[])
        from xmpp import *  # noqa: F403
        from xmpp import auth, transports, roster
        print(json.dumps({
            "before": before,
            "client": type(made).__name__,
            "same_classes": xmpp.Message is netchat.daemon.Message
                            and xmpp.Client is netchat.xmpp.stream.Client
                            and Iq is xmpp.protocol.Iq,
            "modules": [type(m) is types.ModuleType for m in
                        (auth, transports, roster, xmpp.client.transports,
                         xmpp.client.roster, xmpp.features, xmpp.commands)],
            "sasl": hasattr(xmpp.auth, "SASL"),
            "tcp": hasattr(xmpp.transports, "TCPsocket"),
            "dir": "Client" in dir(xmpp) and "NS_CLIENT" in dir(xmpp),
            "http": "http.client" in sys.modules,
        }))
        """)
    assert found == {"before": False, "client": "Client", "same_classes": True,
                     "modules": [True] * 7, "sasl": True, "tcp": True, "dir": True,
                     "http": True}


def test_xmpp_client_transports_work_before_the_package_is_completed():
    # xmpp.client imported directly: Client.connect reaches the real transports module
    found = run("""
        import json, socket, sys
        import netchat
        from xmpp.client import Client
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there: connect fails, after using transports
        result = Client("example.org", port, debug=[]).connect(("127.0.0.1", port),
                                                               use_srv=False)
        print(json.dumps({"result": result,
                          "transports": type(sys.modules["xmpp.client"].transports)
                                        .__name__}))
        """)
    assert found == {"result": "", "transports": "module"}


def test_xmpp_imported_before_netchat_is_left_as_it_is():
    found = run("""
        import json, sys
        import xmpp
        full = dict(vars(xmpp))
        import netchat, netchat.xmpp.stream
        print(json.dumps({"same": vars(xmpp) == full and sys.modules["xmpp"] is xmpp,
                          "client": netchat.xmpp.stream.Client is xmpp.Client}))
        """)
    assert found == {"same": True, "client": True}


def test_an_idle_daemon_after_a_request_still_has_not_loaded_them(xmpp_account):
    """Connecting, logging in, a request and its reply: nothing of xmpppy's runtime
    reaches for the modules left out."""
    accounts = [xmpp_account("idle"), xmpp_account("asker")]
    found = run("""
        import json, sys, threading
        import netchat
        accounts = %s

        class Echo(netchat.Daemon):
            def handleEcho(self, *words):
                return " ".join(words)

        echo, asker = (cls(a["jid"], password=a["password"],
                           connection_options=a["options"])
                       for cls, a in zip((Echo, netchat.Daemon), accounts))
        stop = threading.Event()

        def serve():
            while not stop.is_set() and echo.process(0.2) is not None:
                pass

        loop = threading.Thread(target=serve, daemon=True)
        loop.start()
        reply = asker.request(echo.jid, "echo hello", timeout=20)
        stop.set()
        loop.join(5)
        asker.close()
        echo.close()
        print(json.dumps({"reply": reply, "modules": sorted(sys.modules)}))
        """ % json.dumps([{"jid": a.jid, "password": a.password,
                           "options": a.connection_options} for a in accounts]))
    assert found["reply"] == "hello"
    assert [name for name in UNUSED if name in found["modules"]] == []
