"""Counters, gauges and histograms rendered in the Prometheus text format.

One :class:`Metrics` object is made per process by the runner and handed to the
component and the HTTP server (no module-level registry), which ``GET /metrics`` renders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def _labels(labels: Mapping[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt_labels(labels: Iterable[tuple[str, str]]) -> str:
    items = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(items) + "}" if items else ""


def _fmt_value(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


@dataclass
class _Family:
    kind: str
    help: str
    values: dict[Labels, float] = field(default_factory=dict)
    buckets: tuple[float, ...] = ()
    hist: dict[Labels, list[float]] = field(default_factory=dict)


class Metrics:
    """A small per-process metrics registry."""

    def __init__(self, prefix: str = "mft_") -> None:
        self._prefix = prefix
        self._families: dict[str, _Family] = {}

    def _family(self, name: str, kind: str, help: str, buckets: tuple[float, ...] = ()) -> _Family:
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = _Family(kind, help, buckets=buckets)
        return fam

    def inc(
        self, name: str, help: str, labels: Mapping[str, str] | None = None, value: float = 1
    ) -> None:
        """Add ``value`` to the counter ``name`` (``_total`` is appended when rendering)."""
        fam = self._family(name, "counter", help)
        key = _labels(labels)
        fam.values[key] = fam.values.get(key, 0) + value

    def set(
        self, name: str, help: str, value: float, labels: Mapping[str, str] | None = None
    ) -> None:
        """Set the gauge ``name`` to ``value``."""
        self._family(name, "gauge", help).values[_labels(labels)] = value

    def observe(
        self,
        name: str,
        help: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        buckets: tuple[float, ...] = DURATION_BUCKETS,
    ) -> None:
        """Record ``value`` in the histogram ``name``."""
        fam = self._family(name, "histogram", help, buckets)
        key = _labels(labels)
        counts = fam.hist.setdefault(key, [0.0] * (len(fam.buckets) + 2))
        for i, bound in enumerate(fam.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-2] += 1  # count
        counts[-1] += value  # sum

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """Current value of a counter or gauge (0 if never set); for tests and checks."""
        fam = self._families.get(name)
        return fam.values.get(_labels(labels), 0.0) if fam else 0.0

    def render(self) -> str:
        """The whole registry in the Prometheus text exposition format 0.0.4."""
        out: list[str] = []
        for name in sorted(self._families):
            fam = self._families[name]
            full = self._prefix + name + ("_total" if fam.kind == "counter" else "")
            out.append(f"# HELP {full} {fam.help}")
            out.append(f"# TYPE {full} {fam.kind}")
            for labels, v in sorted(fam.values.items()):
                out.append(f"{full}{_fmt_labels(labels)} {_fmt_value(v)}")
            for labels, counts in sorted(fam.hist.items()):
                for i, bound in enumerate(fam.buckets):
                    le = (*labels, ("le", _fmt_value(bound)))
                    out.append(f"{full}_bucket{_fmt_labels(le)} {_fmt_value(counts[i])}")
                inf = (*labels, ("le", "+Inf"))
                out.append(f"{full}_bucket{_fmt_labels(inf)} {_fmt_value(counts[-2])}")
                out.append(f"{full}_count{_fmt_labels(labels)} {_fmt_value(counts[-2])}")
                out.append(f"{full}_sum{_fmt_labels(labels)} {_fmt_value(counts[-1])}")
        return "\n".join(out) + "\n"
