"""The fleet map's merge rule in Python: what `scripts.MERGE_INTO_MAP` decides inside Redis, in memory (a test holds
the two equal; the offline evaluation can run it without Redis). Expiry and pictures are left to the script.

A report joins the nearest entry of its class whose position agrees with its own: apart by at most `merge_meters`
and by at most `merge_sigmas` standard deviations of their difference (sqrt(u_report^2 + u_entry^2)), and holding no
hazard of the same session seen at the same time (that session's tracker told the two apart). An entry's position
is the mean of its reports weighted by 1 / u^2, its uncertainty 1 / sqrt(sum of weights), its method that of its
most precise report. Numbers are kept as Redis keeps them (14 significant digits), so both decide alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from app.services.tracking.hazard_map import distance_m

LEGACY_UNCERTAINTY_M = 6.2  # as the script reads a report stored before positions had one


def stored(value: float) -> float:
    """A number as Redis' Lua writes it (cjson and tostring: 14 significant digits)."""
    return float(f"{value:.14g}")


@dataclass(frozen=True)
class MapReport:
    source: str  # `<session>/<hazard>`
    label: str
    lat: float
    lon: float
    uncertainty_m: float
    method: str
    first_seen: float
    last_seen: float

    @property
    def session(self) -> str:
        return self.source.split("/", 1)[0]


@dataclass
class MapEntry:
    entry_id: str
    label: str
    lat: float = 0.0
    lon: float = 0.0
    uncertainty_m: float = 0.0
    method: str = ""
    reports: dict[str, MapReport] = field(default_factory=dict)

    def recompute(self) -> None:
        sum_w = sum_lon = sum_lat = 0.0
        sharpest: tuple[float, str] | None = None
        for source in sorted(self.reports):  # the script sums in source order too
            report = self.reports[source]
            u = max(report.uncertainty_m, 0.01)
            w = 1 / (u * u)
            sum_w, sum_lon, sum_lat = sum_w + w, sum_lon + w * report.lon, sum_lat + w * report.lat
            if sharpest is None or u < sharpest[0]:
                sharpest = (u, report.method)
        assert sharpest is not None
        self.lon, self.lat = stored(sum_lon / sum_w), stored(sum_lat / sum_w)
        self.uncertainty_m, self.method = stored(1 / math.sqrt(sum_w)), sharpest[1]


class FleetMap:
    def __init__(self, merge_meters: float, merge_sigmas: float) -> None:
        self.merge_meters = merge_meters
        self.merge_sigmas = merge_sigmas
        self.entries: dict[str, MapEntry] = {}
        self.sources: dict[str, str] = {}

    def merge(self, report: MapReport, new_id: Callable[[], str]) -> str:
        """Report (or re-report) a source's hazard; returns the entry it is now part of."""
        kept = MapReport(
            report.source,
            report.label,
            stored(report.lat),
            stored(report.lon),
            stored(report.uncertainty_m),
            report.method,
            stored(report.first_seen),
            stored(report.last_seen),
        )
        current = self.sources.get(report.source)
        if current is not None and current not in self.entries:
            current = None
        chosen = self._agreeing(report) or current or new_id()
        if current is not None and current != chosen:
            old = self.entries[current]
            del old.reports[report.source]
            if old.reports:
                old.recompute()
            else:
                del self.entries[current]
        entry = self.entries.setdefault(chosen, MapEntry(chosen, report.label))
        entry.reports[report.source] = kept
        entry.recompute()
        self.sources[report.source] = chosen
        return chosen

    def _agreeing(self, report: MapReport) -> str | None:
        best: tuple[float, str] | None = None
        for entry in self.entries.values():
            if entry.label != report.label:
                continue
            apart = distance_m(report.lat, report.lon, entry.lat, entry.lon)
            gate = self.merge_sigmas * math.sqrt(
                report.uncertainty_m * report.uncertainty_m + entry.uncertainty_m * entry.uncertainty_m
            )
            if apart > self.merge_meters or apart > gate or (best is not None and (apart, entry.entry_id) >= best):
                continue
            if not _holds_session(entry, report):
                best = (apart, entry.entry_id)
        return None if best is None else best[1]


def _holds_session(entry: MapEntry, report: MapReport) -> bool:
    return any(
        other.source != report.source
        and other.session == report.session
        and other.first_seen <= report.last_seen
        and report.first_seen <= other.last_seen
        for other in entry.reports.values()
    )
