"""The throwaway Prosody's upload service reads its HTTPS port in large pieces.

Prosody reads every port 4 KiB at a time (``network_default_read_size``) and pauses
about a millisecond per buffered TLS record, so a 20 MiB upload took 7-10 s. netchat
ships ``mod_http_read_size`` (netchat/testing/prosody_plugins), which gives mod_http's
ports alone a read size of 1 MiB; c2s keeps 4 KiB, so Prosody's stanza size limit,
checked once per read, still holds (tests/test_cli.py::
test_jabber_says_when_the_server_drops_the_connection sends a 400 KB stanza).

The speed itself is measured in bench/ (``python -m bench --only files``), never
asserted here: these tests check that the read size is the one the upload port's
connections get, whichever of mod_http and the plugin Prosody loads first.
"""

import os
import re

import pytest

from netchat.testing import ProsodyServer
from netchat.testing.prosody import PLUGIN_DIR

PLUGIN = os.path.join(PLUGIN_DIR, "mod_http_read_size.lua")

pytestmark = pytest.mark.prosody_only


def read(path):
    with open(path) as f:
        return f.read()


def upload_port_read_size(server):
    """The read size the plugin says the upload port's connections get (None when it
    said nothing about that port)."""
    found = re.findall(r"HTTP service 'https' on \[%s\]:%d reads (\d+) bytes per call"
                       % (re.escape(server.host), server.upload_port), read(server.log_path))
    return int(found[-1]) if found else None


class PluginAfterHttp(ProsodyServer):
    """A Prosody that loads mod_http_read_size from the upload Component, so only
    after mod_http (the Component's dependency) has opened the HTTPS port."""

    def _write_config(self):
        super()._write_config()
        text = read(self.config_path)
        assert ', "http_read_size" }' in text
        text = text.replace(', "http_read_size" }', " }")
        with open(self.config_path, "w") as f:
            f.write(text + '  modules_enabled = { "http_read_size" }\n')


class PluginBeforeHttp(ProsodyServer):
    """A Prosody whose upload Component loads mod_http_read_size before
    mod_http_file_share (and so before mod_http opens the HTTPS port), through a
    module of its own: otherwise Prosody picks the order (it loads hosts in no set
    order), and the two paths of the plugin would be tested by chance."""

    def _write_config(self):
        super()._write_config()
        with open(os.path.join(self.directory, "mod_upload_after_read_size.lua"), "w") as f:
            f.write('module:depends("http_read_size");\nmodule:depends("http_file_share");\n')
        text = read(self.config_path)
        for old, new in (('"http_file_share"\n', '"upload_after_read_size"\n'),
                         ('plugin_paths = { "%s" }' % PLUGIN_DIR,
                          'plugin_paths = { "%s", "%s" }' % (PLUGIN_DIR, self.directory))):
            assert old in text
            text = text.replace(old, new)
        with open(self.config_path, "w") as f:
            f.write(text)


@pytest.fixture
def info_log(monkeypatch):
    """Servers started in this test log at info level, whatever NETCHAT_PROSODY_LOG."""
    monkeypatch.delenv("NETCHAT_PROSODY_LOG", raising=False)


def test_the_plugin_ships_in_the_package():
    text = read(PLUGIN)
    assert 'module:get_option_number("http_read_size", 1024 * 1024)' in text
    assert 'require "net.http.server".listener' in text


def test_the_upload_port_reads_1_mib_at_a_time(prosody_server, server_factory, info_log):
    server = server_factory(log_level="info")
    config = read(server.config_path)
    assert "plugin_paths = { \"%s\" }" % PLUGIN_DIR in config
    assert re.search(r'modules_enabled = \{[^}]*"http_read_size"', config)
    assert "http_read_size = %d" % ProsodyServer.HTTP_READ_SIZE in config
    assert "network_default_read_size" not in config  # c2s keeps Prosody's 4 KiB
    assert upload_port_read_size(server) == ProsodyServer.HTTP_READ_SIZE == 1024 * 1024


@pytest.mark.parametrize("server_class", [PluginBeforeHttp, PluginAfterHttp])
def test_the_read_size_applies_whichever_prosody_loads_first(prosody_server, info_log,
                                                             server_class):
    with server_class(log_level="info") as server:
        log = read(server.log_path)
        opened = log.index("Activated service 'https' on [%s]:%d" % (server.host,
                                                                     server.upload_port))
        plugin_first = log.index("mod_http_read_size") < opened
        assert plugin_first == (server_class is PluginBeforeHttp)
        assert upload_port_read_size(server) == ProsodyServer.HTTP_READ_SIZE


def test_a_server_without_upload_loads_no_plugin(prosody_server, server_factory):
    server = server_factory(upload=False)
    config = read(server.config_path)
    assert "plugin_paths = {}" in config and "http_read_size" not in config
