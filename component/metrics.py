"""The service's metrics, kept by ``prometheus_client`` in a registry of their own.

Every metric is defined once, in :data:`DEFINITIONS` (kind, help text, label names,
buckets): what ``GET /metrics`` says about a metric never depends on which call site
ran first. One :class:`Metrics` is made per process by the runner and handed to the
component, the audit log and the HTTP server; it owns its
:class:`~prometheus_client.CollectorRegistry` (never the library's global default), or
uses one given to it.

With ``[http] workers`` above 1 the HTTP side runs in several processes; then every
process keeps its values in prometheus_client's multiprocess files (one directory per
service run, :func:`enable_multiprocess`) and ``/metrics``, whichever worker answers,
renders the sum over all of them (gauges as :attr:`MetricDef.multiprocess_mode` says).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]
# How prometheus_client combines one gauge over processes (its multiprocess_mode).
GaugeMode = Literal["livesum", "livemax", "max", "mostrecent", "livemostrecent"]
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
PREFIX = "mft_"


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric: its kind, help text, label names and (histograms) buckets."""

    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = DURATION_BUCKETS
    # Gauges with several processes: "livesum" adds what live processes hold.
    multiprocess_mode: GaugeMode = "livesum"


# The one table of metrics (README "Monitoring" lists them; a test keeps both in step).
DEFINITIONS: dict[str, MetricDef] = {
    "slots": MetricDef("counter", "Upload slots handed out", ("chat_type",)),
    "slots_refused": MetricDef("counter", "Slot requests refused", ("reason",)),
    "uploads": MetricDef("counter", "Uploads stored and logged", ("chat_type",)),
    "upload_bytes": MetricDef("counter", "Bytes of uploads stored", ("chat_type",)),
    "downloads": MetricDef("counter", "Downloads completed", ("chat_type",)),
    "download_bytes": MetricDef("counter", "Bytes of downloads sent", ("chat_type",)),
    "shares": MetricDef("counter", "Share reports recorded", ("chat_type",)),
    "share_reports_ignored": MetricDef("counter", "Share reports ignored", ("reason",)),
    "scans": MetricDef("counter", "Uploads by malware scan result", ("result",)),
    "scan_infected": MetricDef(
        "counter", "Uploads refused as infected, by signature", ("signature",)
    ),
    "scan_errors": MetricDef("counter", "Malware scans that failed", ("reason",)),
    "scan_seconds": MetricDef("histogram", "Wait for clamd's verdict after the body"),
    "repository_errors": MetricDef("counter", "Repository (file server) operations that failed"),
    "database_errors": MetricDef("counter", "AFT_LOG database operations that failed"),
    "spool_rows": MetricDef("gauge", "AFT_LOG rows waiting in the local spool for the database"),
    # Set by the one process that watches the disk.
    "disk_free_bytes": MetricDef("gauge", "Free bytes on the repository", (), (), "livemax"),
    "disk_free_percent": MetricDef(
        "gauge", "Free space on the repository, percent", (), (), "livemax"
    ),
    "disk_alarm": MetricDef(
        "gauge",
        "1 while the repository's free space is below the alarm threshold",
        (),
        (),
        "livemax",
    ),
    "memory_budget_bytes": MetricDef(
        "gauge", "[http] memory_budget, summed over the HTTP worker processes"
    ),
    "memory_budget_used_bytes": MetricDef(
        "gauge", "Bytes of the memory budgets held by transfers in flight"
    ),
    "memory_budget_peak_bytes": MetricDef(
        "gauge", "Most bytes of one process's memory budget ever held at once", (), (), "max"
    ),
    "memory_budget_waiting": MetricDef("gauge", "Transfers waiting for memory budget"),
    "upload_seconds": MetricDef("histogram", "Time to receive and store an upload", ("chat_type",)),
    "download_seconds": MetricDef("histogram", "Time to send a download", ("chat_type",)),
}

_Metric = Counter | Gauge | Histogram


class Metrics:
    """The process's metrics: counters, gauges and histograms of :data:`DEFINITIONS`.

    A metric is registered on first use, so ``/metrics`` shows only what has happened
    (no gauge claims 0 free bytes before the disk was looked at).

    :param registry: where the metrics live; a new one of this object's own by default.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        definitions: Mapping[str, MetricDef] = DEFINITIONS,
        *,
        multiprocess_dir: Path | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._definitions = dict(definitions)
        self._metrics: dict[str, _Metric] = {}
        # (kind, name, labels) -> the labelled child: labels(**...) validates and locks on
        # every call, and the hot paths (each upload, each download) ask for the same few.
        self._series: dict[tuple[str, str, tuple[tuple[str, str], ...]], _Metric] = {}
        # Set: values live in prometheus_client's files there (enable_multiprocess() first).
        self.multiprocess_dir = multiprocess_dir

    @classmethod
    def shared(cls, directory: Path) -> Metrics:
        """This process's metrics, kept in ``directory`` with those of the service's
        other processes (:func:`enable_multiprocess`, then a :class:`Metrics` over it)."""
        enable_multiprocess(directory)
        return cls(multiprocess_dir=directory)

    def _get(self, name: str, kind: Kind, help: str, labels: Mapping[str, str] | None) -> _Metric:
        metric = self._metrics.get(name)
        if metric is not None:
            return metric
        spec = self._definitions.get(name)
        if spec is None:
            # Not in the table (a test fails for any such call site): still counted, so a
            # rare error path never fails for want of a row.
            log.warning("metric %r is not in component.metrics.DEFINITIONS", name)
            spec = self._definitions[name] = MetricDef(
                kind, help or name, tuple(sorted(labels or {}))
            )
        if spec.kind != kind:
            raise TypeError(f"metric {name!r} is a {spec.kind}, not a {kind}")
        full = PREFIX + name
        if spec.kind == "counter":
            metric = Counter(full, spec.help, spec.labels, registry=self.registry)
        elif spec.kind == "gauge":
            metric = Gauge(
                full,
                spec.help,
                spec.labels,
                registry=self.registry,
                multiprocess_mode=spec.multiprocess_mode,
            )
        else:
            metric = Histogram(
                full, spec.help, spec.labels, registry=self.registry, buckets=spec.buckets
            )
        self._metrics[name] = metric
        return metric

    def _child(self, name: str, kind: Kind, help: str, labels: Mapping[str, str] | None) -> _Metric:
        key = (kind, name, tuple(labels.items()) if labels else ())
        child = self._series.get(key)
        if child is None:
            metric = self._get(name, kind, help, labels)
            if self._definitions[name].kind != kind:  # _get checks only when it creates
                raise TypeError(
                    f"metric {name!r} is a {self._definitions[name].kind}, not a {kind}"
                )
            child = self._series[key] = metric.labels(**labels) if labels else metric
        return child

    def inc(
        self, name: str, help: str = "", labels: Mapping[str, str] | None = None, value: float = 1
    ) -> None:
        """Add ``value`` to the counter ``name`` (rendered as ``mft_<name>_total``).

        ``help`` is only for names missing from :data:`DEFINITIONS`, whose text wins.
        """
        counter = self._child(name, "counter", help, labels)
        assert isinstance(counter, Counter)
        counter.inc(value)

    def set(
        self, name: str, help: str = "", value: float = 0, labels: Mapping[str, str] | None = None
    ) -> None:
        """Set the gauge ``name`` to ``value``."""
        gauge = self._child(name, "gauge", help, labels)
        assert isinstance(gauge, Gauge)
        gauge.set(value)

    def observe(
        self,
        name: str,
        help: str = "",
        value: float = 0,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Record ``value`` in the histogram ``name`` (buckets from :data:`DEFINITIONS`)."""
        hist = self._child(name, "histogram", help, labels)
        assert isinstance(hist, Histogram)
        hist.observe(value)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """A counter's or gauge's value, a histogram's count (0 if never set); for tests
        and checks."""
        spec = self._definitions.get(name)
        if spec is None or name not in self._metrics:
            return 0.0
        suffix = {"counter": "_total", "gauge": "", "histogram": "_count"}[spec.kind]
        found = self.registry.get_sample_value(PREFIX + name + suffix, dict(labels or {}))
        return found or 0.0

    def render(self) -> str:
        """The registry in the Prometheus text exposition format 0.0.4: with several
        processes, the values of all of them (of those that are gone: counters and
        histograms; their live gauges are dropped, :func:`forget_process`)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry).decode()
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(combined).decode()


def enable_multiprocess(directory: Path) -> None:
    """Keep this process's metric values in ``directory``, shared with its HTTP workers.

    prometheus_client's multiprocess mode is process-wide by the library's design: it
    reads the environment variable :data:`MULTIPROC_ENV` (which child processes inherit)
    and picks its value class once. Call this before the first :class:`Metrics` of the
    process makes a metric.
    """
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def forget_process(directory: Path, pid: int) -> None:
    """Drop the live gauges of process ``pid``, which has exited (its counters stay)."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
