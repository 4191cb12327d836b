-- mod_mft_share: tell the xmpp-mft upload component who each of its URLs was sent to.
--
-- Prosody 0.12+, loaded on a VirtualHost:
--     plugin_paths = { "/opt/xmpp-mft/deploy/prosody" }          -- global section
--     VirtualHost "example.com"
--         modules_enabled = { ..., "mft_share" }
--         mft_share_component = "upload.example.com"           -- or a list, one per node
--         mft_share_urls = { "https://upload.example.com:5443/" }  -- URL prefixes to look for
--
-- For each chat, normal or groupchat message a local user sends whose <body> or
-- XEP-0066 OOB <url> holds a URL starting with one of mft_share_urls, the host sends
-- every component in mft_share_component, once per URL and message:
--     <message from='example.com' to='upload.example.com'>
--       <shared xmlns='urn:xmpp-mft:0' from='alice@example.com/phone'
--               to='team@conference.example.com' type='groupchat' url='https://...'/>
--     </message>
-- The user's message is never changed, delayed or dropped: the handler only reads it
-- and returns nothing. Messages without a configured prefix cost one plain substring
-- search per prefix. End-to-end encrypted messages (OMEMO, OpenPGP) hide the URL and
-- are not reported.

local st = require "util.stanza";
local jid_bare = require "util.jid".bare;
local jid_host = require "util.jid".host;

local NS = "urn:xmpp-mft:0";
local OOB = "jabber:x:oob";
local REPORTED_TYPES = { chat = true, normal = true, groupchat = true };

local components = module:get_option_array("mft_share_component");
local prefixes = module:get_option_array("mft_share_urls");

if not components or #components == 0 or not prefixes or #prefixes == 0 then
	module:log("error", "mod_mft_share is inactive on %s: set mft_share_component "
		.. "(the upload component's JID) and mft_share_urls (its public URL prefixes), "
		.. "see the xmpp-mft README, 'Recipients for every client'", module.host);
	return;
end

local component_set = {};
for _, c in ipairs(components) do component_set[c] = true; end

-- A URL in running text ends at white space or markup; trailing punctuation belongs to
-- the sentence (our URLs percent-encode everything but letters, digits and "-._~").
local function url_at(text, pos)
	local url = text:match("^[^%s<>\"']+", pos);
	if not url then return nil; end
	return (url:gsub("[%.,;:!%?%)%]}]+$", ""));
end

local function add_urls(text, found, seen)
	for _, prefix in ipairs(prefixes) do
		local init = 1;
		while true do
			local s = text:find(prefix, init, true);
			if not s then break; end
			local url = url_at(text, s);
			if url and #url > #prefix and not seen[url] then
				seen[url] = true;
				found[#found + 1] = url;
			end
			init = s + #prefix;
		end
	end
end

local function on_message(event)
	local origin, stanza = event.origin, event.stanza;
	if origin.type ~= "c2s" then return; end
	local mtype = stanza.attr.type or "normal";
	if not REPORTED_TYPES[mtype] then return; end
	local body = stanza:get_child_text("body");
	local oob = stanza:get_child("x", OOB);
	if not body and not oob then return; end  -- the common case: nothing to look at

	local found, seen = {}, {};
	if body then add_urls(body, found, seen); end
	for x in stanza:childtags("x", OOB) do
		local url = x:get_child_text("url");
		if url then add_urls(url, found, seen); end
	end
	if #found == 0 then return; end

	local from = stanza.attr.from or origin.full_jid;
	local to = stanza.attr.to or jid_bare(from);  -- no 'to': a message to one's own account
	if component_set[jid_host(to)] then return; end  -- talking to the service is not a share
	for _, url in ipairs(found) do
		for _, component in ipairs(components) do
			module:send(st.message({ from = module.host, to = component })
				:tag("shared", { xmlns = NS, from = from, to = to, type = mtype, url = url }));
		end
	end
	module:log("debug", "reported %d URL(s) sent by %s to %s", #found, from, to);
	-- Nothing returned: the message goes on untouched.
end

-- pre-message/* fire on the sender's host for everything a local client sends, whatever
-- the destination (users, rooms, components, remote JIDs); module:send() raises none of
-- them, so reports cannot loop. Low priority: filters that drop messages (blocklist,
-- firewalls) run first, and a dropped message is not reported.
module:hook("pre-message/bare", on_message, -100);
module:hook("pre-message/full", on_message, -100);
module:hook("pre-message/host", on_message, -100);

module:log("info", "reporting URLs under %s to %s", table.concat(prefixes, ", "),
	table.concat(components, ", "));
