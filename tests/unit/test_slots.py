"""SlotIssuer's parts: resource names drawn in batches, which requests are answered at once."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from component.config import parse_config
from component.layout import RESOURCE_BYTES, RESOURCE_PATTERN, new_resource
from component.xmpp.slots import ResourceNames
from component.xmpp.stanza import NS, SlotRequest
from tests.fixtures.config import make_raw_config


def test_resource_names_look_like_new_resource() -> None:
    """Each name has new_resource's shape and 144 random bits; none repeats across batches."""
    names = ResourceNames(batch=3)
    drawn = [names() for _ in range(20)]
    assert len(set(drawn)) == 20
    for name in drawn:
        assert re.fullmatch(RESOURCE_PATTERN, name) and len(name) == len(new_resource())
        assert len(base64.urlsafe_b64decode(name)) == RESOURCE_BYTES


def test_only_requests_without_waits_are_answered_at_once(tmp_path: Path) -> None:
    """A <recipient> (disco) or a quota (lock, AFT_LOG) sends the request down the async path."""
    from component.xmpp.slots import SlotIssuer

    def issuer(**upload: int) -> SlotIssuer:
        cfg = parse_config(make_raw_config(tmp_path, upload=upload))
        return SlotIssuer(cfg, None, None, None, None, None)  # type: ignore[arg-type]

    plain = SlotRequest(NS, "a", "1", "", None)
    to_room = SlotRequest(NS, "a", "1", "", "room@conference.x")
    assert issuer().can_answer_now(plain)
    assert not issuer().can_answer_now(to_room)
    assert not issuer(files_per_hour=5).can_answer_now(plain)
    assert not issuer(daily_bytes=5).can_answer_now(plain)
