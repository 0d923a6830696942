"""The state of a stream's link, and why it ended.

One :class:`Link` per stream holds a :class:`LinkState` and, while the link is down,
one :class:`Ending`: why, the stream error's condition and text if one ended it, and
whether the server ended the stream itself. The stream changes it under its lock
(:attr:`~netchat.xmpp.stream.Stream.cond`) through four transitions; anyone may read
it at any time (one attribute each: :attr:`Link.dead` is what the hot paths test).

::

    CONNECTING --up--> UP --end--> DEAD --connecting--> CONNECTING
                        |                 (a new link)
                  expect_close
                        v
                     CLOSING --end--> CLOSED

``expect_close`` on a link that is down (CONNECTING or DEAD) makes it CLOSED: no
link is to come back; ``up`` on a CLOSED link (close was asked while a new one was
set up) makes it CLOSING.
"""

import enum
from typing import NamedTuple, Optional

__all__ = ["LinkState", "Ending", "Link"]


class LinkState(enum.Enum):
    """Where a stream's link is."""
    #: No link yet: before the first connect, or while a new one is set up.
    CONNECTING = "connecting"
    #: The stream is up.
    UP = "up"
    #: We are ending it (``close()`` is under way); the link is still up.
    CLOSING = "closing"
    #: Ended, as we asked.
    CLOSED = "closed"
    #: Lost, or ended by the server.
    DEAD = "dead"


#: The states in which there is no link to use.
DOWN = frozenset((LinkState.CONNECTING, LinkState.CLOSED, LinkState.DEAD))


class Ending(NamedTuple):
    """Why a link ended."""
    #: For logs and errors ("server closed the connection", "write failed: ...").
    reason: str
    #: The condition of the stream error that ended the stream, if one did (or the
    #: verdict of a feature, :data:`~netchat.xmpp.feature.WEDGED`).
    condition: Optional[str] = None
    #: The stream error's text.
    text: str = ""
    #: The server ended the stream itself (a stream error or its closing tag): the
    #: session is over, not to be resumed.
    by_server: bool = False
    #: The server closed its stream or the connection: what it sent before is whole
    #: (and still to be handled).
    orderly: bool = False


class Link:
    """The state of one link and why it is down (see the module). Transitions are
    made under the stream's lock; reads need none."""

    __slots__ = ("state", "ending", "dead")

    def __init__(self):
        self.state = LinkState.CONNECTING
        #: Why the link is down (None while it is up).
        self.ending: Optional[Ending] = Ending("not connected")
        #: ``ending.reason`` while the link is down, None while it is up.
        self.dead: Optional[str] = "not connected"

    def __repr__(self):
        return "<Link %s%s>" % (self.state.value,
                                ": %s" % self.dead if self.dead is not None else "")

    @property
    def closing(self) -> bool:
        """We are ending the link, or did."""
        return self.state is LinkState.CLOSING or self.state is LinkState.CLOSED

    # -- transitions (under the stream's lock) ---------------------------------------------

    def connecting(self):
        """A new link is being set up: no longer closing; the reason stays (the link
        is down until :meth:`up`), what the server said about the last one does not."""
        self.state = LinkState.CONNECTING
        self.ending = Ending(self.dead or "not connected")
        self.dead = self.ending.reason

    def up(self):
        """The link is set up (CLOSING if a close was asked meanwhile)."""
        self.state = LinkState.CLOSING if self.state is LinkState.CLOSED else LinkState.UP
        self.ending = self.dead = None

    def expect_close(self):
        """We end the link: losing it from now on is no loss."""
        if self.state is LinkState.UP:
            self.state = LinkState.CLOSING
        elif self.state in DOWN:
            self.state = LinkState.CLOSED

    def end(self, ending: Ending) -> bool:
        """The link is gone for ``ending``; False (nothing changes) when it was down
        already."""
        if self.state is LinkState.UP:
            self.state = LinkState.DEAD
        elif self.state is LinkState.CLOSING:
            self.state = LinkState.CLOSED
        else:
            return False
        self.ending, self.dead = ending, ending.reason
        return True
