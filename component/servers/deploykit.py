"""Snippets that attach the component to an XMPP server (Prosody, ejabberd).

``deploy/prosody/mft.cfg.lua`` and ``deploy/ejabberd/mft.yml`` are these templates
rendered with the values of ``deploy/mft.example.toml`` (a test keeps them equal), and
the test fixtures render the same templates with their own JIDs, ports and secrets,
so what the suite runs is what an admin installs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from string import Template

EXAMPLE_COMPONENT_JID = "upload.example.com"
EXAMPLE_SECRET = "component-secret"
EXAMPLE_PORT = 5347
EXAMPLE_INTERFACE = "127.0.0.1"
EXAMPLE_DOMAIN = "example.com"
EXAMPLE_PUBLIC_URL = "https://upload.example.com:5443/"
EXAMPLE_CHECKOUT = "/opt/xmpp-mft"

PROSODY_TEMPLATE = Template(
    """\
-- xmpp-mft: attach the upload component (XEP-0114) to Prosody 0.12.
--
-- Save as /etc/prosody/conf.d/mft.cfg.lua (Debian's prosody.cfg.lua ends with
-- Include "conf.d/*.cfg.lua"), then `prosodyctl check config` and restart Prosody.
-- The values must match mft.toml: [xmpp] component_jid, secret, host and port.

-- Global section. This file is read after the VirtualHost entries, so return to
-- the global section first: `Host "*"` does that. XEP-0114 is unencrypted: keep the
-- component port on loopback (or a private link between the two machines).
Host "*"
    component_ports = { $port }
    component_interface = $interface

-- The component's JID should be a subdomain of the VirtualHost: then it shows in
-- the host's disco#items, where clients look for an upload service.
$component
-- If Prosody's own upload service (http_file_share, or mod_http_upload from the
-- community modules) is enabled, remove it or give it another name, so that
-- clients find one upload service.
"""
)

# One component entry; each node of a cluster attached to the same Prosody has its own.
PROSODY_COMPONENT_TEMPLATE = Template(
    """\
Component $component_jid
    component_secret = $secret
"""
)

# mod_mft_share (deploy/prosody/mod_mft_share.lua) on the VirtualHost: share reports.
PROSODY_SHARE_TEMPLATE = Template(
    """\
-- xmpp-mft: report who each upload URL is sent to (mod_mft_share, Prosody 0.12+).
--
-- Save as /etc/prosody/conf.d/mft_share.cfg.lua, then `prosodyctl check config` and
-- restart Prosody. mft_share_component is the [xmpp] component_jid of mft.toml (a
-- list of them for a cluster: every node records the URLs of its own uploads);
-- mft_share_urls the [http] public_url of each node, with a trailing slash.
-- If the VirtualHost has its own modules_enabled, add "mft_share" to that list.
$plugin_block
VirtualHost $domain
    modules_enabled = { "mft_share" }
    mft_share_component = $components
    mft_share_urls = { $urls }
"""
)

EJABBERD_TEMPLATE = Template(
    """\
# xmpp-mft: attach the upload component (XEP-0114) to ejabberd 23.01.
#
# Save as /etc/ejabberd/mft.yml and add this line to ejabberd.yml:
#     include_config_file: /etc/ejabberd/mft.yml
# (its listen and modules entries are merged with those of ejabberd.yml), or paste
# the two blocks into ejabberd.yml by hand. Then `ejabberdctl reload_config`.
# The values must match mft.toml: [xmpp] component_jid, secret, host and port.
#
# If mod_http_upload is enabled in ejabberd.yml, remove it (or give it another
# host), so that clients find one upload service. Debian's default c2s shaper
# (normal: 3000 B/s) throttles slot requests; raise it for busy servers.

listen:
  -
    port: $port
    # XEP-0114 is unencrypted: keep it on loopback or a private link.
    ip: $interface
    module: ejabberd_service
    # Every user's slot requests arrive over this one stream: never shape it (none
    # is ejabberd's default here, spelled out so that no shaper is copied in).
    shaper: none
    # hosts: names the one component allowed here and its password. Without it a
    # top-level password would let any component name connect.
    hosts:
      $component_jid:
        password: $secret

modules:
  # Needed for the component to show in the server's disco#items.
  mod_disco: {}
"""
)

# mod_mft_share (deploy/ejabberd/mod_mft_share.erl, built with `make ejabberd-module`).
# Debian's prosody.cfg.lua sets plugin_paths to this; an assignment replaces it, so the
# snippet keeps it.
DEBIAN_PLUGIN_DIR = "/usr/local/lib/prosody/modules"
PROSODY_PLUGIN_BLOCK = Template(
    """
-- Where Prosody finds mod_mft_share.lua: this checkout's deploy/prosody. This
-- replaces plugin_paths of prosody.cfg.lua, so keep its entries (Debian's:
-- $debian), or drop these two lines and copy mod_mft_share.lua
-- into one of those directories.
Host "*"
    plugin_paths = { $paths }
"""
)

EJABBERD_SHARE_TEMPLATE = Template(
    """\
# xmpp-mft: report who each upload URL is sent to (mod_mft_share, ejabberd 23.01).
#
# Build the module and copy it where ejabberd loads modules from (README,
# "Recipients for every client"):
#     make ejabberd-module
#     install -m 0644 build/ejabberd/mod_mft_share.beam $ebin/
# Save this file as /etc/ejabberd/mft_share.yml, include it from ejabberd.yml
#     include_config_file: [/etc/ejabberd/mft.yml, /etc/ejabberd/mft_share.yml]
# and restart ejabberd. mft_share_component is the [xmpp] component_jid of mft.toml
# (a list of them for a cluster: every node records the URLs of its own uploads);
# mft_share_urls the [http] public_url of each node, with a trailing slash.

modules:
  mod_mft_share:
    mft_share_component: $components
    mft_share_urls: $urls
"""
)
EJABBERD_EBIN = "/usr/lib/x86_64-linux-gnu/ejabberd-23.01-1/ebin"


def _lua_string(value: str) -> str:
    """A double-quoted Lua string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def prosody_snippet(
    component_jid: str = EXAMPLE_COMPONENT_JID,
    secret: str = EXAMPLE_SECRET,
    port: int = EXAMPLE_PORT,
    interface: str = EXAMPLE_INTERFACE,
) -> str:
    """The Prosody config snippet for one component."""
    return PROSODY_TEMPLATE.substitute(
        component=prosody_component(component_jid, secret),
        port=int(port),
        interface=_lua_string(interface),
    )


def prosody_component(component_jid: str, secret: str) -> str:
    """One ``Component`` entry (for more components on the same component port)."""
    return PROSODY_COMPONENT_TEMPLATE.substitute(
        component_jid=_lua_string(component_jid), secret=_lua_string(secret)
    )


def prosody_share_snippet(
    domain: str = EXAMPLE_DOMAIN,
    components: Sequence[str] = (EXAMPLE_COMPONENT_JID,),
    urls: Sequence[str] = (EXAMPLE_PUBLIC_URL,),
    plugin_paths: Sequence[str] | None = (DEBIAN_PLUGIN_DIR, f"{EXAMPLE_CHECKOUT}/deploy/prosody"),
) -> str:
    """The Prosody snippet that loads mod_mft_share on ``domain``'s VirtualHost.

    :param plugin_paths: the global ``plugin_paths`` to set, or ``None`` for none (when
        the main config sets them: Prosody 0.12 fails to parse a file that sets an
        option twice if its path is longer than about 60 characters).
    """
    comps = [_lua_string(c) for c in components]
    block = ""
    if plugin_paths is not None:
        block = PROSODY_PLUGIN_BLOCK.substitute(
            debian=_lua_string(DEBIAN_PLUGIN_DIR),
            paths=", ".join(_lua_string(p) for p in plugin_paths),
        )
    return PROSODY_SHARE_TEMPLATE.substitute(
        domain=_lua_string(domain),
        components=comps[0] if len(comps) == 1 else "{ " + ", ".join(comps) + " }",
        urls=", ".join(_lua_string(u) for u in urls),
        plugin_block=block,
    )


def ejabberd_share_snippet(
    components: Sequence[str] = (EXAMPLE_COMPONENT_JID,),
    urls: Sequence[str] = (EXAMPLE_PUBLIC_URL,),
    ebin: str = EJABBERD_EBIN,
) -> str:
    """The ejabberd snippet (YAML) that loads mod_mft_share."""
    comps = [json.dumps(c) for c in components]
    return EJABBERD_SHARE_TEMPLATE.substitute(
        components=comps[0] if len(comps) == 1 else "[" + ", ".join(comps) + "]",
        urls="[" + ", ".join(json.dumps(u) for u in urls) + "]",
        ebin=ebin,
    )


def ejabberd_snippet(
    component_jid: str = EXAMPLE_COMPONENT_JID,
    secret: str = EXAMPLE_SECRET,
    port: int = EXAMPLE_PORT,
    interface: str = EXAMPLE_INTERFACE,
) -> str:
    """The ejabberd config snippet (YAML) for one component."""
    # JSON strings are valid YAML double-quoted scalars.
    return EJABBERD_TEMPLATE.substitute(
        component_jid=json.dumps(component_jid),
        secret=json.dumps(secret),
        port=int(port),
        interface=json.dumps(interface),
    )
