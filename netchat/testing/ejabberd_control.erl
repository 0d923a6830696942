%% The control loop netchat.testing runs inside ejabberd's VM (file:script/1, once
%% ejabberd started). Python fills in %(host)s (the domain, base64) before use.
%% The control loop run inside the VM (with file:script/1, once ejabberd started). It
%% reads lines from its standard input:
%%   register B64USER B64PASSWORD | unregister B64USER | eval B64EXPR | ping | stop
%% and answers each with one line on standard error:  NETCHAT-CTL ok|error TEXT
%% "stop", or the end of input (we closed the pipe, or died), stops the node cleanly.
case lists:keymember(ejabberd, 1, application:which_applications()) of
    true -> ok;
    false -> io:format(standard_error, "NETCHAT-CTL fatal ejabberd did not start~n"),
             erlang:halt(3)
end,
Host = unicode:characters_to_binary(base64:decode("%(host)s")),
Text = fun(T) when is_binary(T) -> T;
          (T) -> try unicode:characters_to_binary(T) of
                     B when is_binary(B) -> B;
                     _ -> io_lib:format("~tp", [T])
                 catch _:_ -> io_lib:format("~tp", [T]) end end,
Say = fun(Tag, T) ->
    Flat = re:replace(Text(T), "\\s+", " ", [global, unicode, {return, binary}]),
    io:format(standard_error, "NETCHAT-CTL ~s ~ts~n", [Tag, Flat]) end,
Eval = fun(Src) ->
    {ok, Toks, _} = erl_scan:string(unicode:characters_to_list(Src)),
    {ok, Exprs} = erl_parse:parse_exprs(Toks),
    {value, V, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
    {ok, io_lib:format("~tp", [V])} end,
%% What SIGTERM does (every application stopped in turn, ejabberd closing client
%% streams with <system-shutdown/>), without init:stop/0's extra second.
Stop = fun() ->
    [catch application:stop(A) || A <- [ejabberd, mnesia]],
    erlang:halt(0) end,
Loop = fun Loop() ->
    case io:get_line(standard_io, "") of
        eof -> Stop();
        {error, _} -> Stop();
        "stop\n" -> Say("ok", "stopping"), Stop();
        Line ->
            Res = try case string:lexemes(string:trim(Line), " ") of
                    %% sync_log: an account must survive a kill -9 right after
                    ["register", U, P] ->
                        Registered = ejabberd_admin:register(base64:decode(U), Host,
                                                             base64:decode(P)),
                        mnesia:sync_log(), Registered;
                    ["unregister", U] ->
                        Unregistered = ejabberd_admin:unregister(base64:decode(U), Host),
                        mnesia:sync_log(), Unregistered;
                    ["eval", E] -> Eval(base64:decode(E));
                    ["ping"] -> {ok, "pong"};
                    Other -> {error, {unknown_command, Other}}
                end
            catch C:R -> {error, {C, R}} end,
            case Res of
                {ok, Msg} -> Say("ok", Msg);
                {error, _, _, Msg} -> Say("error", Msg);
                Err -> Say("error", io_lib:format("~tp", [Err]))
            end,
            Loop()
    end end,
spawn(Loop).
