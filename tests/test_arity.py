"""A request whose words do not fit its handler gets a reply that says so."""

import netchat
from netchat.daemon.commands import arity_error
from netchat.testing import OfflineDaemon


class Ported(netchat.Daemon):
    def handleHello(self):                 # ported as Perl's my ($self) = @_
        return "hi"

    def handleSave(self, name, file=None):
        return "saved"

    def handleBroken(self, *args):
        raise TypeError("a bug inside the handler")


def test_extra_words_get_a_usage_error_not_a_traceback():
    bot = OfflineDaemon(Ported)
    reply = bot.ask("hello there")
    assert reply.status == "error"
    assert reply.text == "error: hello takes no arguments, got 1"
    assert bot.ask("hello").text == "hi"
    assert bot.ask("save").text == "error: save takes 1 to 2 arguments, got 0"
    # a TypeError raised inside a handler is the handler's own error
    assert bot.ask("broken x").text == "error: TypeError: a bug inside the handler"


def test_arity_error_words():
    def one(a):
        pass

    def some(a, *rest):
        pass
    assert arity_error(one, ["x"]) is None
    assert arity_error(one, []) == "takes 1 argument, got 0"
    assert arity_error(some, []) == "takes at least 1 argument, got 0"
    assert arity_error(some, ["a", "b", "c"]) is None
