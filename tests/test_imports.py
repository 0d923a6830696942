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
        import netchat.daemon, netchat.xmpp.reader
        import xmpp
        before = "http.client" in sys.modules
        made = xmpp.Client("example.org", debug=[])
        from xmpp import *  # noqa: F403
        from xmpp import auth, transports, roster
        print(json.dumps({
            "before": before,
            "client": type(made).__name__,
            "same_classes": xmpp.Message is netchat.daemon.core.Message
                            and xmpp.Client is netchat.xmpp.reader.Client
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
        import netchat, netchat.xmpp.reader
        print(json.dumps({"same": vars(xmpp) == full and sys.modules["xmpp"] is xmpp,
                          "client": netchat.xmpp.reader.Client is xmpp.Client}))
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


def _netchat_modules() -> dict:
    """Every module of the package (a package by its own name) -> its file."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(TOP, "netchat")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, TOP)[:-3].replace(os.sep, ".")
                modules[module[:-len(".__init__")] if module.endswith(".__init__")
                        else module] = path
    return modules


def _import_target(node, module: str, path: str) -> str:
    """The absolute module an ``ast.ImportFrom`` in ``module`` (its file ``path``)
    imports from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[:len(base) - (node.level - 1)] if path.endswith("__init__.py") else \
        base[:len(base) - node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _module_imports(path: str, module: str) -> set:
    """The netchat modules ``module`` (its file ``path``) imports when it is loaded:
    not those imported inside functions or only for type checking."""
    import ast
    found = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.ImportFrom):
                target = _import_target(node, module, path)
                for alias in node.names:
                    found.add((target, target + "." + alias.name))
            elif isinstance(node, ast.Import):
                found.update((alias.name, alias.name) for alias in node.names)
    with open(path) as source:
        visit(ast.parse(source.read()).body)
    return found


def test_no_import_cycle_at_run_time():
    modules = _netchat_modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for target, sub in _module_imports(path, module):
            target = sub if sub in modules else target
            if target in modules and target != module:
                targets.add(target)
        graph[module] = targets
    cycles = []

    def walk(module, trail):
        for target in sorted(graph[module]):
            if target in trail:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in done:
                walk(target, trail + [target])
        done.add(module)
    done: set = set()
    for module in sorted(graph):
        if module not in done:
            walk(module, [module])
    assert cycles == []


#: layer -> the layers above it, which it never imports (not even for type checking)
LAYERS_ABOVE = {"netchat.xmpp": ("netchat.client", "netchat.daemon"),
                "netchat.client": ("netchat.daemon",)}


def test_a_layer_never_imports_the_layers_above_it():
    import ast
    found = []
    for module, path in sorted(_netchat_modules().items()):
        layer = next((name for name in LAYERS_ABOVE
                      if module == name or module.startswith(name + ".")), None)
        if layer is None:
            continue
        above = LAYERS_ABOVE[layer]
        with open(path) as source:
            tree = ast.parse(source.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                targets = [_import_target(node, module, path)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            found += [(module, target) for target in targets
                      if target.startswith(above) or target in ("netchat", "netchat.jabber")]
    assert found == []


def test_the_names_from_before_the_layers_still_import():
    found = run("""
        import json, importlib
        import netchat
        from netchat.moved import MOVED
        same = {old: importlib.import_module(old) is importlib.import_module(new)
                for old, new in MOVED.items()}
        from netchat.connection import Connection
        from netchat.dedupe import RecentRequests
        import netchat.rooms
        print(json.dumps({"same": same, "connection": Connection is netchat.Connection,
                          "dedupe": RecentRequests.__module__,
                          "rooms": netchat.rooms.__name__}))
        """)
    assert found["same"] and all(found["same"].values())
    assert found["connection"] and found["dedupe"] == "netchat.daemon.dedupe"
    assert found["rooms"] == "netchat.client.rooms"
