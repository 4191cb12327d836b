%%% mod_mft_share: tell the xmpp-mft upload component who each of its URLs was sent to.
%%%
%%% ejabberd 23.01+. Build (see the README, "Recipients for every client"):
%%%     erlc -I /usr/lib/x86_64-linux-gnu/ejabberd-23.01-1/include \
%%%          -I /usr/lib/erlang/lib/p1_xmpp-1.6.1/include -o OUTDIR mod_mft_share.erl
%%% and load it from ejabberd.yml:
%%%     modules:
%%%       mod_mft_share:
%%%         mft_share_component: "upload.example.com"        # or a list, one per node
%%%         mft_share_urls: ["https://upload.example.com:5443/"]
%%%
%%% For each chat, normal or groupchat message a local user sends (hook user_send_packet)
%%% whose <body> or XEP-0066 OOB <url> holds a URL starting with one of mft_share_urls,
%%% the host routes to every component in mft_share_component, once per URL and message:
%%%     <message from='example.com' to='upload.example.com'>
%%%       <shared xmlns='urn:xmpp-mft:0' from='alice@example.com/phone'
%%%               to='team@conference.example.com' type='groupchat' url='https://...'/>
%%%     </message>
%%% The user's message is passed on untouched (the hook returns its accumulator as it
%%% came), and a failure inside the module is logged, never raised into the session.
%%% End-to-end encrypted messages (OMEMO, OpenPGP) hide the URL and are not reported.

-module(mod_mft_share).
-behaviour(gen_mod).

-export([start/2, stop/1, reload/3, depends/2, mod_opt_type/1, mod_options/1,
         mod_doc/0]).
-export([user_send_packet/1]).

-include("logger.hrl").
-include("xmpp.hrl").

-define(NS_MFT, <<"urn:xmpp-mft:0">>).
%% After filters that may drop the message: they run at lower sequence numbers.
-define(HOOK_SEQ, 100).

start(Host, _Opts) ->
    case {components(Host), prefixes(Host)} of
        {[_ | _] = Comps, [_ | _] = Prefixes} ->
            ?INFO_MSG("mod_mft_share on ~ts: reporting URLs under ~ts to ~ts",
                      [Host, lists:join(<<", ">>, Prefixes), lists:join(<<", ">>, Comps)]),
            ejabberd_hooks:add(user_send_packet, Host, ?MODULE, user_send_packet, ?HOOK_SEQ);
        _ ->
            %% Inactive: no hook at all, so messages cost nothing.
            ?ERROR_MSG("mod_mft_share is inactive on ~ts: set mft_share_component (the "
                       "upload component's JID) and mft_share_urls (its public URL "
                       "prefixes), see the xmpp-mft README, 'Recipients for every client'",
                       [Host])
    end,
    ok.

stop(Host) ->
    ejabberd_hooks:delete(user_send_packet, Host, ?MODULE, user_send_packet, ?HOOK_SEQ),
    ok.

reload(Host, NewOpts, _OldOpts) ->
    stop(Host),
    start(Host, NewOpts).

depends(_Host, _Opts) ->
    [].

mod_opt_type(mft_share_component) ->
    econf:list_or_single(econf:domain());
mod_opt_type(mft_share_urls) ->
    econf:list_or_single(econf:binary()).

mod_options(_Host) ->
    [{mft_share_component, []}, {mft_share_urls, []}].

mod_doc() ->
    #{desc => "Reports URLs of the xmpp-mft upload service that local users send "
              "to the component, so its audit log knows each file's recipients."}.

components(Host) ->
    gen_mod:get_module_opt(Host, ?MODULE, mft_share_component).

prefixes(Host) ->
    [P || P <- gen_mod:get_module_opt(Host, ?MODULE, mft_share_urls), P /= <<>>].

%% The hook: never changes, delays or drops the packet.
user_send_packet({#message{type = Type} = Msg, _C2SState} = Acc)
  when Type == chat; Type == normal; Type == groupchat ->
    try report(Msg)
    catch Class:Reason:Stack ->
        ?ERROR_MSG("mod_mft_share failed on a message: ~p",
                   [{Class, Reason, Stack}])
    end,
    Acc;
user_send_packet(Acc) ->
    Acc.

report(#message{body = [], sub_els = []}) ->
    ok;  % the common case: nothing to look at
report(#message{from = #jid{lserver = Host} = From, to = To0, type = Type,
                body = Body} = Msg) ->
    case {components(Host), prefixes(Host)} of
        {[_ | _] = Comps, [_ | _] = Prefixes} ->
            Texts = [Data || #text{data = Data} <- Body] ++ oob_urls(Msg),
            case find_urls(Texts, Prefixes) of
                [] -> ok;
                Urls ->
                    %% No 'to': a message to one's own account.
                    To = case To0 of
                             undefined -> jid:remove_resource(From);
                             _ -> To0
                         end,
                    case lists:member(To#jid.lserver, Comps) of
                        true -> ok;  % talking to the service is not a share
                        false -> send_reports(Host, Comps, From, To, Type, Urls)
                    end
            end;
        _ ->
            ok
    end.

oob_urls(Msg) ->
    case xmpp:get_subtag(Msg, #oob_x{}) of
        #oob_x{url = Url} when is_binary(Url) -> [Url];
        _ -> []
    end.

%% Every URL under one of Prefixes in Texts, each once, in order of appearance.
find_urls(Texts, Prefixes) ->
    Found = lists:foldl(
              fun(Text, Acc) ->
                      Matches = binary:matches(Text, Prefixes),
                      lists:foldl(
                        fun({Pos, Len}, Acc1) ->
                                Url = url_at(binary:part(Text, Pos, byte_size(Text) - Pos)),
                                case byte_size(Url) > Len andalso not lists:member(Url, Acc1) of
                                    true -> [Url | Acc1];
                                    false -> Acc1
                                end
                        end, Acc, Matches)
              end, [], Texts),
    lists:reverse(Found).

%% A URL in running text ends at white space or markup; trailing punctuation belongs to
%% the sentence (the service percent-encodes everything but letters, digits and -._~).
url_at(Text) ->
    Url = take_url(Text, <<>>),
    strip_trailing(Url).

take_url(<<C, _/binary>>, Acc)
  when C == $\s; C == $\t; C == $\r; C == $\n; C == $<; C == $>; C == $"; C == $' ->
    Acc;
take_url(<<C, Rest/binary>>, Acc) ->
    take_url(Rest, <<Acc/binary, C>>);
take_url(<<>>, Acc) ->
    Acc.

strip_trailing(<<>>) ->
    <<>>;
strip_trailing(Url) ->
    case binary:last(Url) of
        C when C == $.; C == $,; C == $;; C == $:; C == $!; C == $?; C == $);
               C == $]; C == $} ->
            strip_trailing(binary:part(Url, 0, byte_size(Url) - 1));
        _ ->
            Url
    end.

send_reports(Host, Comps, From, To, Type, Urls) ->
    HostJID = jid:make(Host),
    FromBin = jid:encode(From),
    ToBin = jid:encode(To),
    TypeBin = atom_to_binary(Type, utf8),
    lists:foreach(
      fun(Url) ->
              Shared = #xmlel{name = <<"shared">>,
                              attrs = [{<<"xmlns">>, ?NS_MFT}, {<<"from">>, FromBin},
                                       {<<"to">>, ToBin}, {<<"type">>, TypeBin},
                                       {<<"url">>, Url}]},
              lists:foreach(
                fun(Comp) ->
                        ejabberd_router:route(
                          #message{from = HostJID, to = jid:make(Comp), type = normal,
                                   sub_els = [Shared]})
                end, Comps)
      end, Urls),
    ?DEBUG("mod_mft_share: ~B URL(s) sent by ~ts to ~ts", [length(Urls), FromBin, ToBin]).
