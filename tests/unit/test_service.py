# ruff: noqa: E501  (XML literals quote the XEP-0363 examples line for line)
"""UploadComponent on slixmpp's mock stream: exact XML in and out (SlixTest)."""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from slixmpp.test import SlixTest, mocksocket

from component.config import Config, parse_config
from component.errors import FileTooLarge, InvalidRequest, QuotaExceeded
from component.layout import SlotPath
from component.metrics import Metrics
from component.tokens import verify_ticket
from component.xmpp.service import UploadComponent
from component.xmpp.stanza import register_stanzas
from tests.fakes import FakeAudit
from tests.fixtures.config import make_raw_config

register_stanzas()
STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
# slixmpp's Error stanza keeps the jabber:client namespace on component streams (unless
# fix_error_ns, which is process-global); Prosody and ejabberd accept and forward it.


class ComponentTest(SlixTest):
    """SlixTest's stream_start(mode="component"), with UploadComponent as the component."""

    def start(self, audit: FakeAudit | None = None, **sections: dict[str, Any]) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        raw = make_raw_config(Path(self._tmp.name), **sections)
        raw["http"]["public_url"] = "https://upload.montague.tld"
        raw["xmpp"]["component_jid"] = "upload.montague.tld"
        self.cfg: Config = parse_config(raw)
        self.metrics = Metrics()
        self.mode = "component"
        self.xmpp = UploadComponent(self.cfg, audit or FakeAudit(), self.metrics)
        self.xmpp._always_send_everything = True
        self.xmpp.connection_made(mocksocket.TestTransport(self.xmpp))
        self._transport_socket = self.xmpp.socket
        self.xmpp.session_bind_event.set()
        self.xmpp.data_received(self.xmpp.stream_header)
        self.wait_for_send_queue()
        self.xmpp.socket.next_sent()  # stream header
        self.xmpp.socket.next_sent()  # handshake
        # language=XML
        self.recv("<handshake xmlns='jabber:component:accept'/>")

    def tearDown(self) -> None:
        super().tearDown()
        self._transport_socket.socket.close()
        self._tmp.cleanup()

    def sent_xml(self) -> ET.Element:
        """The next stanza the component sent, parsed."""
        self.wait_for_send_queue()
        raw = self.xmpp.socket.next_sent()
        assert raw is not None, "nothing was sent"
        xml = self.parse_xml(raw.decode() if isinstance(raw, bytes) else raw)
        self.fix_namespaces(xml)
        return xml

    def assert_sent(self, expected: str) -> ET.Element:
        """The next stanza sent equals ``expected`` (XML, child order ignored)."""
        got = self.sent_xml()
        want = self.parse_xml(expected)
        self.fix_namespaces(want)
        shown = ET.tostring(got, encoding="unicode")
        assert self.compare(got, want), f"sent:\n{shown}\nexpected:\n{expected}"
        return got

    def request(self, filename: str = "très cool.jpg", size: str = "23456") -> None:
        # language=XML
        self.recv(
            f"""<iq from='romeo@montague.tld/garden' id='step_03' to='upload.montague.tld'
                    type='get'>
                  <request xmlns='urn:xmpp:http:upload:0' filename='{filename}' size='{size}'
                           content-type='image/jpeg'/>
                </iq>"""
        )


REQUEST = """<request xmlns='urn:xmpp:http:upload:0' filename='très cool.jpg' size='23456'
                      content-type='image/jpeg'/>"""


class TestDisco(ComponentTest):
    def test_disco_info_forms(self) -> None:
        """disco#info: store/file, both features, FORM_TYPE first then max-file-size."""
        self.start(upload={"max_file_size": 20000})
        # language=XML
        self.recv(
            """<iq type='get' id='d1' from='romeo@montague.tld/garden' to='upload.montague.tld'>
                 <query xmlns='http://jabber.org/protocol/disco#info'/>
               </iq>"""
        )
        # language=XML
        got = self.assert_sent(
            """<iq type='result' id='d1' to='romeo@montague.tld/garden' from='upload.montague.tld'>
                 <query xmlns='http://jabber.org/protocol/disco#info'>
                   <identity category='store' type='file' name='HTTP File Upload'/>
                   <feature var='http://jabber.org/protocol/disco#info'/>
                   <feature var='jabber:x:data'/>
                   <feature var='urn:xmpp:http:upload:0'/>
                   <feature var='urn:xmpp:http:upload'/>
                   <x xmlns='jabber:x:data' type='result'>
                     <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>
                     <field var='max-file-size'><value>20000</value></field>
                   </x>
                   <x xmlns='jabber:x:data' type='result'>
                     <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload</value></field>
                     <field var='max-file-size'><value>20000</value></field>
                   </x>
                 </query>
               </iq>"""
        )
        for form in got.iter("{jabber:x:data}x"):
            fields = form.findall("{jabber:x:data}field")
            assert [f.get("var") for f in fields] == ["FORM_TYPE", "max-file-size"]

    def test_disco_info_disabled(self) -> None:
        """Mode disabled: the identity stays, the feature and form are gone."""
        self.start(upload={"mode": "disabled"})
        # language=XML
        self.recv(
            """<iq type='get' id='d2' from='romeo@montague.tld/garden' to='upload.montague.tld'>
                 <query xmlns='http://jabber.org/protocol/disco#info'/>
               </iq>"""
        )
        # language=XML
        self.assert_sent(
            """<iq type='result' id='d2' to='romeo@montague.tld/garden' from='upload.montague.tld'>
                 <query xmlns='http://jabber.org/protocol/disco#info'>
                   <identity category='store' type='file' name='HTTP File Upload'/>
                   <feature var='http://jabber.org/protocol/disco#info'/>
                   <feature var='jabber:x:data'/>
                 </query>
               </iq>"""
        )


class TestErrors(ComponentTest):
    def test_file_too_large_matches_xep_example(self) -> None:
        """Too large: the XEP-0363 example 4 error, from a real request."""
        self.start(upload={"max_file_size": 20000}, xmpp={"component_jid": "x"})
        self.request()
        # language=XML
        self.assert_sent(
            f"""<iq from='upload.montague.tld' id='step_03' to='romeo@montague.tld/garden'
                    type='error'>
                  {REQUEST}
                  <error xmlns='jabber:client' type='modify'>
                    <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                    <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>File too large. The maximum file size is 20000 bytes</text>
                    <file-too-large xmlns='urn:xmpp:http:upload:0'>
                      <max-file-size>20000</max-file-size>
                    </file-too-large>
                  </error>
                </iq>"""
        )
        assert self.metrics.value("slots_refused", {"reason": "file_too_large"}) == 1

    def test_retry_matches_xep_example(self) -> None:
        """Quota: the XEP-0363 example 5 error (rendered by _reply_error)."""
        self.start()
        # language=XML
        iq = self.xmpp.Iq(
            xml=self.parse_xml(
                f"""<iq xmlns='jabber:component:accept' from='romeo@montague.tld/garden'
                        id='step_03' to='upload.montague.tld' type='get'>{REQUEST}</iq>"""
            )
        )
        exc = QuotaExceeded(
            datetime(2017, 12, 3, 23, 42, 5, tzinfo=UTC),
            "Quota reached. You can only upload 5 files in 5 minutes",
        )
        self.xmpp._reply_error(iq, exc)
        # language=XML
        self.assert_sent(
            f"""<iq from='upload.montague.tld' id='step_03' to='romeo@montague.tld/garden'
                    type='error'>
                  {REQUEST}
                  <error xmlns='jabber:client' type='wait'>
                    <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                    <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Quota reached. You can only upload 5 files in 5 minutes</text>
                    <retry xmlns='urn:xmpp:http:upload:0' stamp='2017-12-03T23:42:05Z'/>
                  </error>
                </iq>"""
        )

    def test_legacy_file_too_large(self) -> None:
        """A legacy request gets the legacy <file-too-large> child."""
        self.start()
        # language=XML
        legacy = """<request xmlns='urn:xmpp:http:upload'><filename>a.iso</filename>
                      <size>9</size></request>"""
        iq = self.xmpp.Iq(
            xml=self.parse_xml(
                f"""<iq xmlns='jabber:component:accept' from='romeo@montague.tld/garden'
                        id='l1' to='upload.montague.tld' type='get'>{legacy}</iq>"""
            )
        )
        self.xmpp._reply_error(iq, FileTooLarge(9, 5))
        # language=XML
        self.assert_sent(
            f"""<iq from='upload.montague.tld' id='l1' to='romeo@montague.tld/garden'
                    type='error'>
                  {legacy}
                  <error xmlns='jabber:client' type='modify'>
                    <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                    <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>File too large. The maximum file size is 5 bytes</text>
                    <file-too-large xmlns='urn:xmpp:http:upload'>
                      <max-file-size>5</max-file-size>
                    </file-too-large>
                  </error>
                </iq>"""
        )

    def test_unexpected_error_is_generic(self) -> None:
        """An unexpected failure is undefined-condition/cancel with a generic text."""
        self.start(audit=FakeAudit(fail=RuntimeError("secret detail")), upload={"daily_bytes": 10})
        self.request(size="5")
        # language=XML
        self.assert_sent(
            """<iq from='upload.montague.tld' id='step_03' to='romeo@montague.tld/garden'
                    type='error'>
                  <request xmlns='urn:xmpp:http:upload:0' filename='très cool.jpg' size='5'
                           content-type='image/jpeg'/>
                  <error xmlns='jabber:client' type='cancel'>
                    <undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                    <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Internal error</text>
                  </error>
                </iq>"""
        )
        assert self.metrics.value("slots_refused", {"reason": "internal"}) == 1

    def test_quota_from_audit_usage(self) -> None:
        """Usage from AFT_LOG counts: files_per_hour=3 with 3 uploaded is refused."""
        self.start(audit=FakeAudit(files=3), upload={"files_per_hour": 3})
        self.request(size="5")
        error = self.sent_xml().find("{jabber:client}error")
        assert error is not None and error.get("type") == "wait"
        assert error.find(f"{STANZAS}resource-constraint") is not None
        retry = error.find("{urn:xmpp:http:upload:0}retry")
        assert retry is not None and retry.get("stamp", "").endswith(":00:00Z")

    def test_pending_slots_settled_in_one_query(self) -> None:
        """Each quota check asks AFT_LOG about all the user's pending slots at once."""
        audit = FakeAudit()
        self.start(audit=audit, upload={"files_per_hour": 10})
        for _ in range(3):
            self.request(size="5")
            assert self.sent_xml().find("{urn:xmpp:http:upload:0}slot") is not None
        assert [len(names) for names in audit.uploaded_among_calls] == [1, 2]
        assert len(set(audit.uploaded_among_calls[1])) == 2


class TestSlot(ComponentTest):
    def test_slot_shape_v0(self) -> None:
        """A :0 slot has put and get URLs with the GET URL's path, and no headers."""
        self.start()
        self.request()
        xml = self.sent_xml()
        slot = xml.find("{urn:xmpp:http:upload:0}slot")
        put = slot.find("{urn:xmpp:http:upload:0}put").get("url")
        get = slot.find("{urn:xmpp:http:upload:0}get").get("url")
        assert put.startswith(get + "?") and get.startswith(
            "https://upload.montague.tld/node_1/im/"
        )
        assert get.endswith("/tr%C3%A8s%20cool.jpg")
        assert slot.find(".//{urn:xmpp:http:upload:0}header") is None
        assert self.metrics.value("slots", {"chat_type": "im"}) == 1

    def test_slot_shape_legacy(self) -> None:
        """A legacy request (mime-type) gets <slot><put>URL</put><get>URL</get></slot>."""
        self.start()
        # language=XML
        self.recv(
            """<iq from='romeo@montague.tld/garden' id='l2' to='upload.montague.tld' type='get'>
                 <request xmlns='urn:xmpp:http:upload'>
                   <filename>my_juliet.png</filename><size>23456</size>
                   <mime-type>image/png</mime-type>
                 </request>
               </iq>"""
        )
        xml = self.sent_xml()
        slot = xml.find("{urn:xmpp:http:upload}slot")
        assert slot is not None and xml.find("{urn:xmpp:http:upload:0}slot") is None
        put = slot.findtext("{urn:xmpp:http:upload}put")
        get = slot.findtext("{urn:xmpp:http:upload}get")
        assert put.startswith(get + "?") and "type=image%2Fpng" in put


class TestDownload(ComponentTest):
    GET = "https://upload.montague.tld/node_1/persistent/20240517/13.2/" + "R" * 24 + "/a%20b.txt"

    def test_personal_url(self) -> None:
        """The ticket names the requester's bare JID and keeps path and fragment."""
        self.start()
        # language=XML
        self.recv(
            f"""<iq from='juliet@capulet.tld/balcony' id='t1' to='upload.montague.tld'
                    type='get'><download xmlns='urn:xmpp-mft:0' url='{self.GET}#frag'/></iq>"""
        )
        got = self.sent_xml()
        assert got.get("type") == "result"
        url = got.find("{urn:xmpp-mft:0}download").get("url")
        base, _, rest = url.partition("?")
        query, _, fragment = rest.partition("#")
        assert base == self.GET and fragment == "frag"
        params = dict(parse_qsl(query))
        path = SlotPath.parse("node_1", "persistent", "20240517", "13.2", "R" * 24, "a b.txt")
        ticket = verify_ticket(self.cfg.http.secret, path, params)
        assert ticket is not None and ticket.jid == "juliet@capulet.tld"

    def test_cluster_node_urls_accepted(self) -> None:
        """A GET URL of a [cluster] node gets a ticket on that node's base URL."""
        self.start(cluster={"nodes": {"node_2": "https://n2.example:8443/mft/"}})
        url = "https://n2.example:8443/mft/node_2/im/20240517/13/" + "Q" * 24 + "/x"
        personal = self.xmpp.personal_url(url, "a@b")
        assert personal.startswith(url + "?jid=a%40b&exp=")

    def test_foreign_urls_refused(self) -> None:
        """URLs of other hosts, nodes, schemes or shapes are bad-request."""
        self.start(cluster={"nodes": {"node_2": "https://n2.example"}})
        r = "R" * 24
        for bad in (
            self.GET.replace("https://", "http://"),
            self.GET.replace("upload.montague.tld", "evil.tld"),
            self.GET.replace("/node_1/", "/node_2/"),  # node_2 lives elsewhere
            self.GET.replace("/persistent/", "/secret/"),
            self.GET.replace("13.2", "24"),
            self.GET + "/more",
            f"https://upload.montague.tld/node_1/im/20240517/13/{r}/..",
            f"https://upload.montague.tld/node_1/im/20240517/13/{r}/a%2Fb",
            "https://upload.montague.tld/node_1/../../etc/passwd",
            "",
        ):
            with pytest.raises(InvalidRequest):
                self.xmpp.personal_url(bad, "a@b")
