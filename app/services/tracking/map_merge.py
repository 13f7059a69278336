"""The fleet map's merge rule in Python: what `scripts.MERGE_INTO_MAP` decides inside Redis, in memory (a test holds
the two equal; the offline evaluation can run it without Redis). Expiry and pictures are left to the script.

A report joins the nearest entry of its class whose position agrees with its own: apart by at most `merge_meters`
and by at most `merge_sigmas` standard deviations of their difference (sqrt(u_report^2 + u_entry^2)), and holding no
hazard of the same session seen at the same time and placed apart from it (that session's tracker told the two
apart). An entry's position
is the mean of its reports weighted by 1 / u^2, its uncertainty 1 / sqrt(sum of weights), its method that of its
most precise report. One object that one session saw as two classes at once (debris also detected as a crack),
projected within SAME_OBJECT_M, is shown once: the report of fewer frames (then the greater source) gives way and
leaves the map. Numbers are kept as Redis keeps them (14 significant digits), so both decide alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from app.services.tracking.hazard_map import distance_m

LEGACY_UNCERTAINTY_M = 6.2  # as the script reads a report stored before positions had one
SAME_OBJECT_M = 0.75


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
    frames: int = 1

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
            report.frames,
        )
        current = self.sources.get(report.source)
        if current is not None and current not in self.entries:
            current = None
        winner, lesser = self._same_object(report)
        if winner is not None:
            if current is not None:
                self._remove(current, report.source)
            self.sources.pop(report.source, None)
            return winner
        for entry_id, source in lesser:
            self._remove(entry_id, source)
            self.sources.pop(source, None)
        chosen = self._agreeing(report) or current or new_id()
        if current is not None and current != chosen:
            self._remove(current, report.source)
        entry = self.entries.setdefault(chosen, MapEntry(chosen, report.label))
        entry.reports[report.source] = kept
        entry.recompute()
        self.sources[report.source] = chosen
        return chosen

    def _remove(self, entry_id: str, source: str) -> None:
        entry = self.entries[entry_id]
        del entry.reports[source]
        if entry.reports:
            entry.recompute()
        else:
            del self.entries[entry_id]

    def _near(self, report: MapReport) -> list[MapEntry]:
        return [
            e
            for e in self.entries.values()
            if distance_m(report.lat, report.lon, e.lat, e.lon) <= self.merge_meters + 1
        ]

    def _same_object(self, report: MapReport) -> tuple[str | None, list[tuple[str, str]]]:
        """The entry of a report this one gives way to, else the (entry, source) reports that give way to it."""
        winner: tuple[int, str, str] | None = None  # frames, source, entry
        lesser = []
        for entry in self._near(report):
            for other in entry.reports.values():
                if not one_object(report, other):
                    continue
                if outranks(other, report):
                    if winner is None or (other.frames, winner[1]) > (winner[0], other.source):
                        winner = (other.frames, other.source, entry.entry_id)
                else:
                    lesser.append((entry.entry_id, other.source))
        return (winner[2] if winner else None), lesser

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
        and distance_m(report.lat, report.lon, other.lat, other.lon) > SAME_OBJECT_M
        for other in entry.reports.values()
    )


def one_object(report: MapReport, other: MapReport) -> bool:
    """Two reports of one session that are one object seen as two classes at once (debris also detected as a
    crack): both projected (not the camera's GPS), seen at the same time, within SAME_OBJECT_M of each other."""
    return (
        other.source != report.source
        and other.session == report.session
        and other.label != report.label
        and "camera_gps" not in (report.method, other.method)
        and other.first_seen <= report.last_seen
        and report.first_seen <= other.last_seen
        and distance_m(report.lat, report.lon, other.lat, other.lon) <= SAME_OBJECT_M
    )


def outranks(report: MapReport, other: MapReport) -> bool:
    """Of one object's two reports, the one shown: more frames, then the smaller source."""
    return report.frames > other.frames or (report.frames == other.frames and report.source < other.source)


def shown_once(reports: list[MapReport]) -> list[MapReport]:
    """One session's reports without those that give way to another report of the same object."""
    return [r for r in reports if not any(one_object(r, other) and outranks(other, r) for other in reports)]
