"""The built-in probe frame: a road scene with known hazards, run through a detector to prove it works.

Used before a version may serve (hot-swap) and by `/health/deep`. Only labels the model knows are
expected, so a model with other classes is checked for running, not for finding the demo's hazards.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.services.core.timing import ms_since
from app.services.inference.types import DetectOptions, ModelInfo

if TYPE_CHECKING:
    from app.services.detection.detectors import BoundDetector

ASSETS = Path(__file__).resolve().parents[2] / "assets"
PROBE_IMAGE = ASSETS / "probe.jpg"
PROBE_EXPECTED = ASSETS / "probe.json"  # {"labels": [...]}: what the bundled model must find in probe.jpg
PROBE_DEADLINE_SECONDS = 5.0


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_ms: float
    expected_labels: list[str]
    found_labels: list[str]


class Probe:
    def __init__(self, image: Path = PROBE_IMAGE, expected: Path = PROBE_EXPECTED) -> None:
        self.image = image.read_bytes()
        self.labels = frozenset(json.loads(expected.read_text())["labels"])

    async def run(self, detector: BoundDetector) -> tuple[ProbeResult, ModelInfo]:
        """Detect on the probe frame (raises the detector's typed errors when it cannot run at all)."""
        started = time.perf_counter()
        deadline = time.monotonic() + PROBE_DEADLINE_SECONDS
        result, model = await detector.detect(self.image, DetectOptions(), deadline)
        expected = self.labels & set(model.class_names)
        found = {d.label for d in result.detections}
        return ProbeResult(expected <= found, ms_since(started), sorted(expected), sorted(found)), model
