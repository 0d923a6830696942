"""The texts of the replies a daemon sends on its own (not a handler's result).

:class:`ReplyTexts` is a base of :class:`~netchat.Daemon`: a subclass changes a text by
setting the attribute (``MSG_DENIED = "no"``), keeping its ``%`` placeholders. Each
reply also carries a status (``unknown``, ``busy``, ``denied``, ...) that does not
change with its text.
"""

__all__ = ["ReplyTexts"]


class ReplyTexts:
    """The replies a daemon sends on its own (see the module)."""

    #: Reply to a command nobody handles (``%s``: the command).
    MSG_UNKNOWN_COMMAND = "unknown command '%s'; send 'help' for the list of commands"
    #: Reply to a request without a command.
    MSG_EMPTY_REQUEST = "empty request; send 'help' for the list of commands"
    #: Reply when the worker pool's backlog is full (``%d``: requests waiting).
    MSG_BUSY = "busy: %d requests are waiting; try again later"
    #: Reply to requests that arrive (or still wait) while the daemon shuts down.
    MSG_SHUTTING_DOWN = "busy: shutting down"
    #: Reply to a sender ``allow``/``acl`` does not allow.
    MSG_DENIED = "denied"
    #: Reply to a request over a cap (what, limit).
    MSG_TOO_LARGE = "too large: %s is over the limit of %s"
    #: Reply to a stored request older than ``max_age`` (age, max_age).
    MSG_EXPIRED = "expired: this request waited %.0fs on the server (max_age %gs)"
    #: Reply to a request that arrived (or waited for a worker) past the deadline its
    #: sender gave (the seconds it was valid for).
    MSG_DEADLINE = "expired: the sender gave this request %gs, and they have passed"
    #: Reply when a handler's result does not fit in a reply (size, max_reply).
    MSG_REPLY_TOO_LARGE = ("too large: the reply would be %d bytes, over the limit of %d "
                           "(max_reply); the command ran")
    #: Reply to a file sent alone (its URL as the body) without ``file_command``.
    MSG_FILE_ALONE = "a file needs a command: send 'COMMAND ARGS...' with the file attached"
    #: Reply to a request with links when ``downloads=False``.
    MSG_NO_DOWNLOADS = ("error: this daemon does not fetch linked files (downloads=False); "
                        "send the file as an attachment under the stanza limit")
    #: Reply when a handler's result cannot be turned into text (the exception).
    MSG_NO_TEXT = "error: the command ran, but its result cannot be turned into text: %s"
