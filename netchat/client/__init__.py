"""The client layer: a connection to an XMPP server and what it does for its user
(requests and replies, presence, rooms, files, bringing a lost link back), above the
stream (:mod:`netchat.xmpp`) and below the daemon (:mod:`netchat.daemon`).

:class:`~netchat.client.connection.Connection` is the front; the other modules are
its parts and bases.
"""
