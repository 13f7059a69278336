"""Annotated-frame uploads: the spooling service and the policy that picks which frames go."""

from __future__ import annotations

from dataclasses import dataclass

from app.services.observability.metrics import Metrics
from app.services.sessions.ledger import UploadLedger
from app.services.tracking.service import TrackingService
from app.services.uploads.policy import UploadPolicy
from app.services.uploads.service import UploadService, create_upload_service
from app.settings import Settings


@dataclass(frozen=True)
class Uploads:
    service: UploadService
    policy: UploadPolicy


def build_uploads(settings: Settings, metrics: Metrics, ledger: UploadLedger, tracking: TrackingService) -> Uploads:
    record_upload = tracking.recording_uploads(ledger.record)  # + the map's best frames
    service = create_upload_service(settings.uploads, settings.breakers, metrics, record_upload)
    policy = UploadPolicy(
        service,
        settings.uploads.min_confidence,
        settings.uploads.min_interval_seconds,
        per_hazard=settings.uploads.per_hazard,
    )
    return Uploads(service, policy)
