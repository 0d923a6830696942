"""The admission chain and the options it reads, without a server (an offline bot:
the request goes through the same routing and pipeline as live)."""

import netchat
from netchat.daemon.admission import ADHOC_CHECKS, CHAT_CHECKS, young_enough
from netchat.daemon.options import RequestOptions
from netchat.testing import OfflineDaemon


class Echo(netchat.Daemon):
    def handleEcho(self, *words):
        return " ".join(words)


def test_a_cap_changed_after_the_constructor_holds_for_the_next_request():
    bot = OfflineDaemon(Echo, max_body=100, max_args=3)
    assert isinstance(bot.daemon.options, RequestOptions)
    assert bot.daemon.max_body == bot.daemon.options.max_body == 100
    assert bot.ask("echo a b").status == "ok"
    bot.daemon.max_args = 2         # Perl style: an attribute of the daemon
    assert bot.daemon.options.max_args == 2
    assert bot.ask("echo a b c").status == "too-large"
    bot.daemon.options.max_body = 5
    reply = bot.ask("echo a b")
    assert reply.status == "too-large" and "5 characters" in reply.text


def test_the_constructor_coerces_the_caps():
    bot = OfflineDaemon(Echo, max_body="50", download_hosts=None, threads=2)
    try:
        assert bot.daemon.max_body == 50 and bot.daemon.download_hosts == []
        assert bot.daemon.max_pending == 100   # max(100, 10 * threads)
    finally:
        bot.close()  # its worker threads


def test_a_refusal_is_judged_before_the_duplicate_memory_and_a_copy_after():
    chat_before = [check.__name__ for check in CHAT_CHECKS.before_parsing]
    adhoc_before = [check.__name__ for check in ADHOC_CHECKS.before_parsing]
    # a refused request is never remembered: the sender checks come first
    assert chat_before[:3] == adhoc_before[:3] == ["allowed", "small_enough", "not_a_copy"]
    assert young_enough in CHAT_CHECKS.before_parsing       # a chat may be stored
    assert young_enough not in ADHOC_CHECKS.before_parsing  # an iq never is
    assert [c.__name__ for c in CHAT_CHECKS.after_parsing] == [
        "may_run", "well_formed", "within_limits"]
