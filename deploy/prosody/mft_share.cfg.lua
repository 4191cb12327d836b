-- xmpp-mft: report who each upload URL is sent to (mod_mft_share, Prosody 0.12+).
--
-- Save as /etc/prosody/conf.d/mft_share.cfg.lua, then `prosodyctl check config` and
-- restart Prosody. mft_share_component is the [xmpp] component_jid of mft.toml (a
-- list of them for a cluster: every node records the URLs of its own uploads);
-- mft_share_urls the [http] public_url of each node, with a trailing slash.
-- If the VirtualHost has its own modules_enabled, add "mft_share" to that list.

-- Where Prosody finds mod_mft_share.lua: this checkout's deploy/prosody. This
-- replaces plugin_paths of prosody.cfg.lua, so keep its entries (Debian's:
-- "/usr/local/lib/prosody/modules"), or drop these two lines and copy mod_mft_share.lua
-- into one of those directories.
Host "*"
    plugin_paths = { "/usr/local/lib/prosody/modules", "/opt/xmpp-mft/deploy/prosody" }

VirtualHost "example.com"
    modules_enabled = { "mft_share" }
    mft_share_component = "upload.example.com"
    mft_share_urls = { "https://upload.example.com:5443/" }
