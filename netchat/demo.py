"""The example daemon of the README, used by ``netchat demo``.

Run it against any server with::

    netchat run netchat.demo:MyServer --jid node1@example.org -o repository=/tmp/repo
"""

import os
import re
import shutil
import tempfile

import netchat


class MyServer(netchat.Daemon):
    """hello, callMethod, save: the Net::Chat::Daemon SYNOPSIS in Python.

    Option ``repository``: the directory ``save`` writes to (default: a new temporary
    directory).
    """

    def __init__(self, user, repository=None, **options):
        options.setdefault("commands", {"callMethod": "someMethod", "save": "handleSave"})
        super().__init__(user, **options)
        self.repository = repository or tempfile.mkdtemp(prefix="netchat-demo-repository-")

    def handleHello(self):
        return "hello to you too"

    def handleSave(self, filename, file):
        if not re.fullmatch(r"[.\w]+", filename) or filename in (".", ".."):
            return "denied"
        # a large file arrives on disk (sent through the server's upload service):
        # stream it rather than read it whole
        with file.open() as source, open(os.path.join(self.repository, filename),
                                         "wb") as target:
            shutil.copyfileobj(source, target, 1024 * 1024)
        return "ok"

    def someMethod(self, *args):
        return "someMethod called with: %s" % " ".join(args)

    def helpSave(self):
        return "save FILENAME (attach the file)"
