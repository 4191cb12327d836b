"""The share-module snippets in deploy/ are the templates the test fixtures render."""

from __future__ import annotations

from pathlib import Path

from component.servers.deploykit import ejabberd_share_snippet, prosody_share_snippet

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_prosody_share_snippet_is_the_rendered_template() -> None:
    """deploy/prosody/mft_share.cfg.lua is exactly prosody_share_snippet() for the example."""
    assert (DEPLOY / "prosody" / "mft_share.cfg.lua").read_text() == prosody_share_snippet()


def test_ejabberd_share_snippet_is_the_rendered_template() -> None:
    """deploy/ejabberd/mft_share.yml is exactly ejabberd_share_snippet() for the example."""
    assert (DEPLOY / "ejabberd" / "mft_share.yml").read_text() == ejabberd_share_snippet()


def test_cluster_snippets_list_every_component() -> None:
    """Several nodes' components render as a list in both snippets."""
    comps = ["upload.example.com", "upload2.example.com"]
    assert 'mft_share_component = { "upload.example.com", "upload2.example.com" }' in (
        prosody_share_snippet(components=comps)
    )
    assert 'mft_share_component: ["upload.example.com", "upload2.example.com"]' in (
        ejabberd_share_snippet(components=comps)
    )
