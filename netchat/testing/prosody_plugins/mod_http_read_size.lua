-- mod_http_read_size: a bigger read size for Prosody's HTTP ports only.
--
-- Shipped with netchat (netchat/testing/prosody_plugins/).
--
-- Why: Prosody reads `network_default_read_size` bytes per call on every port it
-- opens (4096 by default) and, on a TLS port, waits about a millisecond before the
-- next read whenever the TLS layer still holds data. An upload to mod_http_file_share
-- (XEP-0363) is one long stream of TLS records, so it crawls: measured with netchat's
-- bench (python -m bench --only files, Prosody 0.12, loopback), a 20 MiB file took
-- 5-10 s (2-4 MB/s); with 1 MiB reads, 0.36-0.47 s. Each read holds up to that many
-- bytes in memory while Prosody handles it (one buffer per connection being read).
--
-- Why not `network_default_read_size = 1048576`: that setting applies to every port,
-- c2s included, and Prosody checks `c2s_stanza_size_limit` only after it has parsed
-- a whole read (util/xmppstream.lua): with 1 MiB reads, a client's stanza of up to
-- 1 MiB gets past a 256 KiB limit. This module changes the HTTP ports alone.
--
-- How: core/portmanager.lua opens each service's ports with the read size
-- `listener.default_mode or network_default_read_size`, and mod_http's "http" and
-- "https" services share one listener table, net.http.server's. This module sets its
-- `default_mode`, so ports opened from then on read `http_read_size` bytes per call;
-- c2s, s2s and components keep network_default_read_size.
--
-- Use (prosody.cfg.lua, global section):
--
--   plugin_paths = { "/path/to/netchat/testing/prosody_plugins" }
--   modules_enabled = { ...; "http_read_size" }
--   http_read_size = 1048576   -- bytes per read on the HTTP ports (the default)
--
-- Prosody loads hosts, and the modules they need, in no set order: mod_http (which
-- opens the ports) may come first, e.g. as a dependency of an http_file_share
-- Component. Ports already open are then given the new size too (with the "epoll"
-- network backend, 0.12's default, whose accepted connections take the read size
-- of their listening port); with another backend a warning says what to do.
--
-- At info level it logs the size it set, then, for each open HTTP port, the read
-- size that port's connections get (what its listening socket says).

module:set_global();

local portmanager = require "core.portmanager";
local listener = require "net.http.server".listener;

local read_size = module:get_option_number("http_read_size", 1024 * 1024);
-- what to go back to on unload (nil: portmanager's network_default_read_size)
local previous = listener.default_mode;
local network_default = module:get_option_number("network_default_read_size", 4096);

-- The read size of a listening port's new connections, when the backend says.
local function port_read_size(server)
	return server.read_size -- net.server_epoll
		or server._pattern; -- net.server_event
end

-- Each (service name, "[interface]:port", listening server) of the ports open for
-- net.http.server's listener (mod_http's "http" and "https" services).
local function http_ports()
	local found = {};
	for name, interface, port, _, active in portmanager.get_active_services():iter(nil, nil, nil, nil) do
		if active.service and active.service.listener == listener then
			table.insert(found, { name, ("[%s]:%d"):format(interface, port), active.server });
		end
	end
	return found;
end

local function report(ports)
	for _, port in ipairs(ports) do
		module:log("info", "HTTP service '%s' on %s reads %s bytes per call", port[1], port[2],
			tostring(port_read_size(port[3]) or "an unknown number of"));
	end
end

-- Give ports opened before this module was loaded the size `size`.
local function resize_open_ports(size)
	local ports = http_ports();
	for _, port in ipairs(ports) do
		local server = port[3];
		if server.read_size ~= nil and server.set_mode then -- net.server_epoll
			server:set_mode(size);
		else
			module:log("warn", "HTTP service '%s' on %s was opened before mod_http_read_size "
				.. "was loaded and this network backend cannot change its read size: "
				.. "reload mod_http (or use network_backend = \"epoll\")", port[1], port[2]);
		end
	end
	return ports;
end

listener.default_mode = read_size;
module:log("info", "HTTP read size: %d bytes per read on mod_http's ports "
	.. "(other ports keep network_default_read_size, %d)", read_size, network_default);
report(resize_open_ports(read_size));

-- Ports opened later (mod_http loaded after this module): say what they got.
module:hook_global("service-added", function (event)
	if event.service and event.service.listener == listener then
		local ports = {};
		for _, port in ipairs(http_ports()) do
			if port[1] == event.name then table.insert(ports, port); end
		end
		report(ports);
	end
end);

function module.unload()
	listener.default_mode = previous;
	resize_open_ports(previous or network_default);
end
