"""The XMPP stream under a :class:`~netchat.Connection`, in layers.

- :mod:`netchat.xmpp.transport`: the non-blocking TCP/TLS socket.
- :mod:`netchat.xmpp.parser`: bytes to stanzas (xmpppy's parser, quiet and bounded).
- :mod:`netchat.xmpp.negotiate`: STARTTLS, SASL, registration, binding.
- :mod:`netchat.xmpp.stream`: the owner lock, wake-up, queues, pump, keepalive, close.

xmpppy (the ``xmpp`` package) provides the stanza classes and the XML stream plumbing;
everything that touches the network is netchat's own.
"""
