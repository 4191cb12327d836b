-- xmpp-mft: attach the upload component (XEP-0114) to Prosody 0.12.
--
-- Save as /etc/prosody/conf.d/mft.cfg.lua (Debian's prosody.cfg.lua ends with
-- Include "conf.d/*.cfg.lua"), then `prosodyctl check config` and restart Prosody.
-- The values must match mft.toml: [xmpp] component_jid, secret, host and port.

-- Global section. This file is read after the VirtualHost entries, so return to
-- the global section first: `Host "*"` does that. XEP-0114 is unencrypted: keep the
-- component port on loopback (or a private link between the two machines).
Host "*"
    component_ports = { 5347 }
    component_interface = "127.0.0.1"

-- The component's JID should be a subdomain of the VirtualHost: then it shows in
-- the host's disco#items, where clients look for an upload service.
Component "upload.example.com"
    component_secret = "component-secret"

-- If Prosody's own upload service (http_file_share, or mod_http_upload from the
-- community modules) is enabled, remove it or give it another name, so that
-- clients find one upload service.
