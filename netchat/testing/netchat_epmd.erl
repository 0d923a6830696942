%% An epmd replacement for throwaway ejabberd clusters (netchat.testing.cluster):
%% a node named NAME_PORT@HOST listens for Erlang distribution on PORT, and finds
%% its peers the same way. Nothing talks to a system epmd (port 4369), so clusters
%% run side by side, as any user. Used with: -epmd_module netchat_epmd
%% -start_epmd false.
-module(netchat_epmd).
-export([start_link/0, register_node/2, register_node/3, listen_port_please/2,
         port_please/2, port_please/3, names/0, names/1, address_please/3]).

start_link() -> ignore.

register_node(Name, Port) -> register_node(Name, Port, inet).
register_node(_Name, _Port, _Family) -> {ok, rand:uniform(3)}.

%% the port this node listens on, from its own name
listen_port_please(Name, _Host) -> {ok, port_of(Name)}.

%% a peer's port, from its name; distribution protocol version 6 (OTP 23 and later)
port_please(Name, Host) -> port_please(Name, Host, infinity).
port_please(Name, _Host, _Timeout) -> {port, port_of(Name), 6}.

names() -> {error, address}.
names(_Host) -> {error, address}.

address_please(_Name, _Host, inet) -> {ok, {127, 0, 0, 1}};
address_please(_Name, _Host, _Family) -> {error, nxdomain}.

port_of(Name) ->
    Text = if is_atom(Name) -> atom_to_list(Name); true -> Name end,
    list_to_integer(lists:last(string:split(Text, "_", trailing))).
