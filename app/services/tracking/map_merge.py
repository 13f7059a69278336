"""The fleet map's merge rule in Python: what `scripts.MERGE_INTO_MAP` decides inside Redis, in memory (a test holds
the two equal; the offline evaluation can run it without Redis). Expiry and pictures are left to the script.

A report joins the nearest entry of its class whose position agrees with its own: apart by at most `merge_meters`
and by at most `merge_sigmas` standard deviations of their difference (sqrt(u_report^2 + u_entry^2)), and holding no
hazard of the same session seen at the same time and placed apart from it (that session's tracker told the two
apart). An entry's position
is the mean of its reports weighted by 1 / u^2, its uncertainty 1 / sqrt(sum of weights), its method that of its
most precise report. One object that one session saw as two classes at once (debris also detected as a crack),
projected within SAME_OBJECT_M, is shown once: the report of fewer frames (then the greater source) gives way and
leaves the map. A session's GPS bias against the map (`SessionOffset`) is subtracted before its report is matched.
Numbers are kept as Redis keeps them (14 significant digits), so both decide alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from app.services.tracking.hazard_map import EARTH_RADIUS_M, distance_m

LEGACY_UNCERTAINTY_M = 6.2  # as the script reads a report stored before positions had one
SAME_OBJECT_M = 0.75
OFFSET_CLEAR_M = 8.0  # a report with one entry of its class that others placed this near is an offset sample
OFFSET_MIN_SAMPLES = 3
OFFSET_KEPT = 30
RADIANS = math.pi / 180


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
    frame_lat: float | None = None  # in the map's frame (less the session's offset); None: as measured
    frame_lon: float | None = None

    @property
    def session(self) -> str:
        return self.source.split("/", 1)[0]

    @property
    def in_frame(self) -> tuple[float, float]:
        if self.frame_lat is None or self.frame_lon is None:
            return self.lat, self.lon
        return self.frame_lat, self.frame_lon


@dataclass
class MapEntry:
    entry_id: str
    label: str
    lat: float = 0.0
    lon: float = 0.0
    uncertainty_m: float = 0.0
    method: str = ""
    frame_lat: float = 0.0  # where the entry is in the map's frame: matched against, and offsets learned on
    frame_lon: float = 0.0
    reports: dict[str, MapReport] = field(default_factory=dict)

    def recompute(self) -> None:
        sum_w, sum_lat, sum_lon = _weighted_sums(self.reports.values())
        _, frame_lat, frame_lon = _weighted_sums(self.reports.values(), in_frame=True)
        sharpest = min(sorted(self.reports.values(), key=lambda r: r.source), key=_weight_u)  # the first of equals
        self.lon, self.lat = stored(sum_lon / sum_w), stored(sum_lat / sum_w)
        self.frame_lon, self.frame_lat = stored(frame_lon / sum_w), stored(frame_lat / sum_w)
        self.uncertainty_m, self.method = stored(1 / math.sqrt(sum_w)), sharpest.method


@dataclass
class SessionOffset:
    """How far a session's positions sit from the fleet's map (metres north and east: its vehicle's GPS bias against
    the other vehicles'). A report with exactly one entry of its class within OFFSET_CLEAR_M of it, as other sessions
    placed that entry (their reports' weighted mean, the camera's GPS left out), is a sample: that position less the
    report's. The offset is the median of the latest OFFSET_KEPT samples (one per hazard), in use from
    OFFSET_MIN_SAMPLES on; `established` once it was."""

    samples: list[tuple[str, float, float]] = field(default_factory=list)  # (source, north, east)
    established: bool = False

    def sample(self, source: str, report: tuple[float, float], others: tuple[float, float] | None) -> None:
        self.samples = [s for s in self.samples if s[0] != source]
        if others is not None:
            north = stored((others[0] - report[0]) * RADIANS * EARTH_RADIUS_M)
            east = stored((others[1] - report[1]) * RADIANS * EARTH_RADIUS_M * math.cos(report[0] * RADIANS))
            self.samples = [*self.samples, (source, north, east)][-OFFSET_KEPT:]

    def aligned(self, lat: float, lon: float) -> tuple[float, float]:
        """(lat, lon) less the offset, once it rests on enough samples."""
        if len(self.samples) < OFFSET_MIN_SAMPLES:
            return lat, lon
        north, east = statistics.median(s[1] for s in self.samples), statistics.median(s[2] for s in self.samples)
        return lat + north / EARTH_RADIUS_M / RADIANS, lon + east / (EARTH_RADIUS_M * math.cos(lat * RADIANS)) / RADIANS


class FleetMap:
    def __init__(self, merge_meters: float, merge_sigmas: float) -> None:
        self.merge_meters = merge_meters
        self.merge_sigmas = merge_sigmas
        self.entries: dict[str, MapEntry] = {}
        self.sources: dict[str, str] = {}
        self.offsets: dict[str, SessionOffset] = {}

    def merge(self, report: MapReport, new_id: Callable[[], str]) -> tuple[str, bool, tuple[str, ...]]:
        """Report (or re-report) a source's hazard: the entry it is now part of, whether this report established its
        session's offset, and the entries it emptied (`hazard_map.Merged`)."""
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
        offset = self.offsets.setdefault(report.session, SessionOffset())
        if report.method != "camera_gps":
            offset.sample(report.source, (report.lat, report.lon), self._clear_of(report))
        realigned = len(offset.samples) >= OFFSET_MIN_SAMPLES and not offset.established
        offset.established = offset.established or realigned
        aligned = offset.aligned(report.lat, report.lon)
        kept = replace(kept, frame_lat=stored(aligned[0]), frame_lon=stored(aligned[1]))
        winner, lesser = self._same_object(report)
        emptied: list[str] = []
        if winner is not None:
            if current is not None:
                emptied += self._remove(current, report.source)
            self.sources.pop(report.source, None)
            return winner, realigned, tuple(emptied)
        for entry_id, source in lesser:
            emptied += self._remove(entry_id, source)
            self.sources.pop(source, None)
        chosen = self._agreeing(report, *aligned) or current or new_id()
        if current is not None and current != chosen:
            emptied += self._remove(current, report.source)
        entry = self.entries.setdefault(chosen, MapEntry(chosen, report.label))
        entry.reports[report.source] = kept
        entry.recompute()
        self.sources[report.source] = chosen
        return chosen, realigned, tuple(emptied)

    def _remove(self, entry_id: str, source: str) -> list[str]:
        """[entry_id] when that was its last report (the entry is gone), else []."""
        entry = self.entries[entry_id]
        del entry.reports[source]
        if entry.reports:
            entry.recompute()
            return []
        del self.entries[entry_id]
        return [entry_id]

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

    def _clear_of(self, report: MapReport) -> tuple[float, float] | None:
        """Where other sessions placed the one entry of the report's class within OFFSET_CLEAR_M of it, in the map's
        frame (None: none, or more than one)."""
        near = []
        for entry in self.entries.values():
            others = [r for r in entry.reports.values() if r.session != report.session and r.method != "camera_gps"]
            if entry.label == report.label and others:
                position = _frame_mean(others)
                if distance_m(report.lat, report.lon, *position) <= OFFSET_CLEAR_M:
                    near.append(position)
        return near[0] if len(near) == 1 else None

    def _agreeing(self, report: MapReport, lat: float, lon: float) -> str | None:
        """(lat, lon): the report's position less its session's offset, matched to entries in the map's frame."""
        best: tuple[float, str] | None = None
        for entry in self.entries.values():
            if entry.label != report.label:
                continue
            apart = distance_m(lat, lon, entry.frame_lat, entry.frame_lon)
            gate = self.merge_sigmas * math.sqrt(
                report.uncertainty_m * report.uncertainty_m + entry.uncertainty_m * entry.uncertainty_m
            )
            if apart > self.merge_meters or apart > gate or (best is not None and (apart, entry.entry_id) >= best):
                continue
            if not _holds_session(entry, report):
                best = (apart, entry.entry_id)
        return None if best is None else best[1]


def _weight_u(report: MapReport) -> float:
    return max(report.uncertainty_m, 0.01)


def _weighted_sums(reports: Iterable[MapReport], in_frame: bool = False) -> tuple[float, float, float]:
    """(sum of weights 1 / u^2, of weighted lat, of weighted lon), summed in source order as the script does; of the
    positions as measured, or `in_frame`."""
    sum_w = sum_lat = sum_lon = 0.0
    for report in sorted(reports, key=lambda r: r.source):
        w = 1 / (_weight_u(report) * _weight_u(report))
        lat, lon = report.in_frame if in_frame else (report.lat, report.lon)
        sum_w, sum_lat, sum_lon = sum_w + w, sum_lat + w * lat, sum_lon + w * lon
    return sum_w, sum_lat, sum_lon


def _frame_mean(reports: list[MapReport]) -> tuple[float, float]:
    sum_w, sum_lat, sum_lon = _weighted_sums(reports, in_frame=True)
    return sum_lat / sum_w, sum_lon / sum_w


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
