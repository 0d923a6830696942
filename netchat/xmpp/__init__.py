"""The XMPP stream under a :class:`~netchat.Connection`, in layers.

- :mod:`netchat.xmpp.transport`: the non-blocking TCP/TLS socket.
- :mod:`netchat.xmpp.parser`: bytes to stanzas (xmpppy's parser, quiet and bounded).
- :mod:`netchat.xmpp.reader`: the one read-parse-check step, and how a stream ended.
- :mod:`netchat.xmpp.negotiate`: STARTTLS, SASL, registration, binding.
- :mod:`netchat.xmpp.stream`: one stream: the owner lock (:mod:`~netchat.xmpp.owner`),
  the out-queue (:mod:`~netchat.xmpp.outbox`), the link's state
  (:mod:`~netchat.xmpp.link`), setting up (:mod:`~netchat.xmpp.opening`), the pump
  (:mod:`~netchat.xmpp.driver`), keepalive (:mod:`~netchat.xmpp.keepalive`), close.
- :mod:`netchat.xmpp.feature`: the hooks of an optional feature of the stream;
  :mod:`netchat.xmpp.smacks` (XEP-0198 stream management) is the one there is.

xmpppy (the ``xmpp`` package) provides the stanza classes and the XML stream plumbing;
everything that touches the network is netchat's own.
"""
