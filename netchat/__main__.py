"""``python -m netchat ...`` runs the ``netchat`` command; ``python -m netchat jabber
...`` runs ``jabber`` (for environments without the console scripts on PATH)."""

import sys

from .cli import jabber_main, netchat_main

if __name__ == "__main__":
    if sys.argv[1:2] == ["jabber"]:
        sys.exit(jabber_main(sys.argv[2:]))
    if sys.argv[1:2] == ["netchat"]:
        sys.exit(netchat_main(sys.argv[2:]))
    sys.exit(netchat_main())
