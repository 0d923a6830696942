"""Body parsing, handler lookup and help (pure logic, no server)."""

import pytest

from netchat.daemon.commands import ParseError, command_names, find_handler, help_for, parse_body


@pytest.mark.parametrize("body, expected", [
    ("hello", ("hello", [])),
    ("callMethod a b c", ("callMethod", ["a", "b", "c"])),
    ("  spaced   out\targs \n", ("spaced", ["out", "args"])),
    ("cmd 'a b' \"c d\" e", ("cmd", ["a b", "c d", "e"])),
    ("cmd 'a' 'b'", ("cmd", ["a", "b"])),           # Perl's greedy regex gave one: a' 'b
    ("cmd 'it\\'s' \"say \\\"hi\\\"\"", ("cmd", ["it's", 'say "hi"'])),
    ("cmd 'back\\\\slash'", ("cmd", ["back\\slash"])),
    ("cmd 'C:\\dir\\file'", ("cmd", ["C:\\dir\\file"])),  # other backslashes stay
    ("cmd don't", ("cmd", ["don't"])),                 # a quote inside a word is a char
    ("cmd 'a b'c", ("cmd", ["a b", "c"])),
    ("cmd ''", ("cmd", [""])),
    ("echo x 'y z'", ("echo", ["x", "y z"])),
    ("", (None, [])),
    ("   ", (None, [])),
    ("日本 語", ("日本", ["語"])),
])
def test_parse_body(body, expected):
    assert parse_body(body) == expected


@pytest.mark.parametrize("body", ["cmd 'abc", 'cmd "a\\"', "'"])
def test_unterminated_quote_is_a_clear_error(body):
    with pytest.raises(ParseError, match="unterminated"):
        parse_body(body)


class Thing:
    def handleHello(self):
        return "hi"

    def handleSomeThing(self, *args):
        """Do some thing with ARGS.

        More text that is not the summary.
        """

    def helpHello(self):
        return "hello: says hi"

    def handler(self):  # not a handleXxx method: no command 'r'
        pass

    def handle_private(self):  # nor this
        pass

    def showHelp(self, command=None):
        return "the help"

    def named(self, *args):
        return args


def test_find_handler_order():
    thing = Thing()
    function = lambda *a: a  # noqa: E731
    commands = {"callMethod": "named", "fn": function, "hello": "named"}
    assert find_handler(thing, commands, "help") == thing.showHelp
    assert find_handler(thing, commands, "callMethod") == thing.named
    assert find_handler(thing, commands, "fn") is function
    assert find_handler(thing, commands, "hello") == thing.named  # the map wins
    assert find_handler(thing, {}, "hello") == thing.handleHello
    assert find_handler(thing, {}, "someThing") == thing.handleSomeThing
    assert find_handler(thing, {}, "SomeThing") == thing.handleSomeThing  # Perl's \u
    for name in ("r", "_private", "", "nothing", "__class__", "missing method"):
        assert find_handler(thing, {}, name) is None
    assert find_handler(thing, {"x": "no_such_method"}, "x") is None


def test_command_names_are_sorted_and_complete():
    assert command_names(Thing(), {"zeta": "named", "alpha": print}) == [
        "alpha", "hello", "help", "someThing", "zeta"]


def test_help_order():
    thing = Thing()
    commands = {"save": lambda f: f}
    assert help_for(thing, commands, {"hello": "from the option"}, "hello") == \
        "from the option"
    assert help_for(thing, commands, {}, "hello") == "hello: says hi"          # helpXxx
    assert help_for(thing, commands, {}, "someThing") == "Do some thing with ARGS."
    assert help_for(thing, commands, {}, "save") == "save args..."
    assert help_for(thing, commands, {}, "unknown") == "unknown args..."
