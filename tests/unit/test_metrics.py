"""The Prometheus text rendering of Metrics."""

from __future__ import annotations

from component.metrics import Metrics


def test_render_counters_gauges_histograms() -> None:
    """Counters get _total, labels are escaped, histograms are cumulative."""
    m = Metrics()
    m.inc("uploads", "Uploads", {"chat_type": "im"})
    m.inc("uploads", "Uploads", {"chat_type": "im"}, 2)
    m.inc("slots_refused", "Refused", {"reason": 'a"b\\c\nd'})
    m.set("spool_rows", "Rows waiting", 7)
    m.observe("upload_seconds", "Upload time", 0.3, buckets=(0.1, 1.0))
    m.observe("upload_seconds", "Upload time", 5, buckets=(0.1, 1.0))
    text = m.render()
    assert "# TYPE mft_uploads_total counter" in text
    assert 'mft_uploads_total{chat_type="im"} 3' in text
    assert 'mft_slots_refused_total{reason="a\\"b\\\\c\\nd"} 1' in text
    assert "mft_spool_rows 7" in text
    assert 'mft_upload_seconds_bucket{le="0.1"} 0' in text
    assert 'mft_upload_seconds_bucket{le="1"} 1' in text
    assert 'mft_upload_seconds_bucket{le="+Inf"} 2' in text
    assert "mft_upload_seconds_sum 5.3" in text
    assert m.value("uploads", {"chat_type": "im"}) == 3
    assert m.value("absent") == 0
