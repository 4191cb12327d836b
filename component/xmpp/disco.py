"""Service discovery of the component: what it publishes, and how it asks about others."""

from __future__ import annotations

from slixmpp import JID
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.exceptions import IqError, IqTimeout

from component.config import Config
from component.xmpp.chattype import DiscoInfo, DiscoUnavailable
from component.xmpp.stanza import NS, NS_LEGACY


class SlixDisco:
    """:class:`chattype.Disco` over the component's own stream."""

    def __init__(self, xmpp: ComponentXMPP, timeout: float) -> None:
        self._xmpp = xmpp
        self._timeout = timeout

    async def info(self, jid: str) -> DiscoInfo:
        try:
            iq = await self._xmpp.plugin["xep_0030"].get_info(
                jid=JID(jid), ifrom=self._xmpp.boundjid, timeout=self._timeout, local=False
            )
        except (IqError, IqTimeout) as exc:
            raise DiscoUnavailable(f"disco#info {jid}") from exc
        info = iq["disco_info"]
        return DiscoInfo(
            identities=frozenset((i[0], i[1]) for i in info["identities"]),
            features=frozenset(info["features"]),
        )

    async def items(self, jid: str) -> list[str]:
        try:
            iq = await self._xmpp.plugin["xep_0030"].get_items(
                jid=JID(jid), ifrom=self._xmpp.boundjid, timeout=self._timeout
            )
        except (IqError, IqTimeout) as exc:
            raise DiscoUnavailable(f"disco#items {jid}") from exc
        return [str(item[0]) for item in iq["disco_items"]["items"]]


def publish_disco(xmpp: ComponentXMPP, cfg: Config) -> None:
    """Publish identity ``store/file``, both upload features and their max-file-size forms.

    Published once: the static disco data outlives reconnections (and slixmpp 1.17's
    ``del_extended_info`` does not remove forms, so re-publishing would duplicate them).
    The static handlers are synchronous; their futures are already done.

    .. note:: go-sendxmpp reads ``max-file-size`` only when ``FORM_TYPE`` comes first.
    """
    disco = xmpp.plugin["xep_0030"]
    jid = xmpp.boundjid
    disco.add_identity(category="store", itype="file", name="HTTP File Upload", jid=jid)
    if cfg.upload.mode == "disabled":
        return  # hide the feature: clients then do not offer uploads at all
    forms = []
    for ns in (NS, NS_LEGACY):
        disco.add_feature(ns, jid=jid)
        form = xmpp.plugin["xep_0004"].make_form(ftype="result")  # type: ignore[no-untyped-call]
        form.add_field(var="FORM_TYPE", ftype="hidden", value=ns)
        form.add_field(var="max-file-size", value=str(cfg.upload.max_file_size))
        forms.append(form)
    xmpp.plugin["xep_0128"].add_extended_info(jid=jid, data=forms)
