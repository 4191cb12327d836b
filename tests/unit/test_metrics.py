"""Metrics: one definition per metric, prometheus_client's text format, own registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from component.metrics import DEFINITIONS, PREFIX, Metrics

ROOT = Path(__file__).resolve().parents[2]
# metrics.inc("name" / self._metrics.set("name" ... at any call site.
CALL = re.compile(r"metrics\.(inc|set|observe)\(\s*\"(\w+)\"")


def test_render_counters_gauges_histograms() -> None:
    """Counters get _total, labels are escaped, histograms are cumulative."""
    m = Metrics()
    m.inc("uploads", labels={"chat_type": "im"})
    m.inc("uploads", labels={"chat_type": "im"}, value=2)
    m.inc("slots_refused", labels={"reason": 'a"b\\c\nd'})
    m.set("spool_rows", value=7)
    m.observe("upload_seconds", value=0.3, labels={"chat_type": "im"})
    m.observe("upload_seconds", value=5, labels={"chat_type": "im"})
    text = m.render()
    assert "# TYPE mft_uploads_total counter" in text
    assert 'mft_uploads_total{chat_type="im"} 3.0' in text
    assert 'mft_slots_refused_total{reason="a\\"b\\\\c\\nd"} 1.0' in text
    assert "mft_spool_rows 7.0" in text
    assert 'mft_upload_seconds_bucket{chat_type="im",le="0.1"} 0.0' in text
    assert 'mft_upload_seconds_bucket{chat_type="im",le="1.0"} 1.0' in text
    assert 'mft_upload_seconds_bucket{chat_type="im",le="+Inf"} 2.0' in text
    assert 'mft_upload_seconds_sum{chat_type="im"} 5.3' in text
    assert m.value("uploads", {"chat_type": "im"}) == 3
    assert m.value("upload_seconds", {"chat_type": "im"}) == 2
    assert m.value("absent") == 0 and m.value("downloads", {"chat_type": "im"}) == 0


def test_help_text_is_the_tables_whoever_calls_first() -> None:
    """The help line comes from DEFINITIONS, not from the first call's argument."""
    m = Metrics()
    m.inc("database_errors", "whatever the first caller said")
    assert "# HELP mft_database_errors_total AFT_LOG database operations that failed" in (
        m.render()
    )


def test_each_metrics_object_has_its_own_registry() -> None:
    """Two Metrics never share values (no global default registry)."""
    a, b = Metrics(), Metrics()
    a.inc("repository_errors")
    assert (a.value("repository_errors"), b.value("repository_errors")) == (1, 0)
    assert "mft_repository_errors_total" not in b.render()


def test_kind_and_labels_are_checked() -> None:
    """A gauge is not a counter, and a label the table does not name is refused."""
    m = Metrics()
    with pytest.raises(TypeError, match="gauge"):
        m.inc("spool_rows")
    with pytest.raises(ValueError, match="label"):
        m.inc("uploads", labels={"kind": "im"})


def test_labelled_series_are_reused_and_still_checked() -> None:
    """Repeated calls add to the same labelled series; another label value is its own,
    and a kind mismatch is refused even after the name was used the right way."""
    m = Metrics()
    for _ in range(3):
        m.inc("uploads", labels={"chat_type": "im"})
        m.observe("upload_seconds", value=0.02, labels={"chat_type": "im"})
    m.inc("uploads", labels={"chat_type": "groupchat"}, value=2)
    assert m.value("uploads", {"chat_type": "im"}) == 3
    assert m.value("uploads", {"chat_type": "groupchat"}) == 2
    assert m.value("upload_seconds", {"chat_type": "im"}) == 3
    with pytest.raises(TypeError, match="counter"):
        m.set("uploads", value=1, labels={"chat_type": "im"})


def test_every_metric_used_is_defined_and_documented() -> None:
    """Every name a call site uses has a row in DEFINITIONS and a line in the README."""
    used = {
        name
        for package in ("component", "httpd")
        for path in (ROOT / package).rglob("*.py")
        for _kind, name in CALL.findall(path.read_text())
    }
    assert used, "the pattern found no call site"
    assert sorted(used - set(DEFINITIONS)) == []
    readme = (ROOT / "README.rst").read_text()
    assert [n for n in DEFINITIONS if f"{PREFIX}{n}" not in readme] == []
