"""The ``xmpp router`` line of ``mft check``: the component port and its handshake."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from component.config import Config
from component.xmpp.probe import XMPP_TIMEOUT, component_handshake
from httpd.ops.check.result import CheckResult, os_reason


async def check_xmpp(cfg: Config) -> list[CheckResult]:
    """TCP connect to the component port and try the XEP-0114 handshake.

    A ``conflict`` answer means the secret was right and the running service holds the
    JID (Prosody checks the secret first, then refuses a second connection), so it is
    OK. ejabberd instead accepts several connections for one component and balances
    between them; the check closes its stream right after the handshake.
    """
    x = cfg.xmpp
    where = f"{x.host}:{x.port} as {x.component_jid}"
    name = "xmpp router"
    try:
        answer = await component_handshake(x.host, x.port, x.component_jid, x.secret)
    except TimeoutError:
        return [CheckResult("FAIL", name, f"{where}: no answer within {XMPP_TIMEOUT:g}s")]
    except OSError as exc:
        return [
            CheckResult(
                "FAIL",
                name,
                f"{where}: cannot connect: {os_reason(exc)}",
                "is the XMPP server running with a component port there? (Prosody:"
                " component_ports/component_interface; ejabberd: an ejabberd_service listener)",
            )
        ]
    except (ValueError, ET.ParseError) as exc:
        return [CheckResult("FAIL", name, f"{where}: not a component port: {exc}")]
    if answer.accepted:
        return [CheckResult("OK", name, f"{where}: handshake accepted")]
    if answer.condition == "conflict":
        return [CheckResult("OK", name, f"{where}: component already connected (service running)")]
    detail = f"{where}: handshake refused: {answer.condition}"
    if answer.text:
        detail += f" ({answer.text})"
    if answer.condition == "not-authorized":
        hint = (
            "[xmpp] secret must equal the component's component_secret (Prosody) or"
            " password (ejabberd)"
        )
    elif answer.condition in ("host-unknown", "improper-addressing", "invalid-from"):
        hint = (
            f"the XMPP server has no component {x.component_jid}: add"
            " deploy/prosody/mft.cfg.lua or deploy/ejabberd/mft.yml and reload it"
        )
    else:
        hint = "read the XMPP server's log"
    return [CheckResult("FAIL", name, detail, hint)]
