"""The uploads' tally: every outcome and disk directory exported from the start, each count also a metric."""

from __future__ import annotations

import errno

from app.services.observability.metrics import Metrics
from app.services.uploads.status import UPLOAD_OUTCOMES, UploadStatus
from app.services.uploads.tally import UploadTally


def test_every_outcome_and_directory_is_exported_at_zero_before_any_upload() -> None:
    metrics = Metrics()
    UploadTally(metrics)
    for outcome in UPLOAD_OUTCOMES:
        assert metrics.registry.get_sample_value("hazard_uploads_total", {"outcome": outcome.value}) == 0
    for directory in ("spool", "storage"):
        assert metrics.registry.get_sample_value("hazard_upload_disk_errors_total", {"directory": directory}) == 0


def test_outcomes_disk_errors_and_spool_depth_are_counted_and_exported() -> None:
    metrics = Metrics()
    tally = UploadTally(metrics)
    tally.count(UploadStatus.SPOOLED)
    tally.count(UploadStatus.SPOOLED)
    tally.disk_failed("spool", OSError(errno.ENOSPC, "No space left on device"))
    tally.spool_size(3)
    assert tally.outcomes == {"spooled": 2}
    assert metrics.registry.get_sample_value("hazard_uploads_total", {"outcome": "spooled"}) == 2
    assert tally.disk_errors == {"spool": 1}
    assert metrics.registry.get_sample_value("hazard_upload_disk_errors_total", {"directory": "spool"}) == 1
    assert tally.last_disk_error is not None
    assert (tally.last_disk_error["directory"], tally.last_disk_error["reason"]) == ("spool", "No space left on device")
    assert metrics.registry.get_sample_value("hazard_upload_spool_files") == 3
