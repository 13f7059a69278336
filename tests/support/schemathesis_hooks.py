"""Loaded by Schemathesis (`SCHEMATHESIS_HOOKS=tests.support.schemathesis_hooks`): what a schema-valid frame is.

The spec says a frame is a binary JPEG, PNG or WebP body (raw or the multipart field `file`); a JSON schema cannot
say "decodable", so without this the fuzzer sends random bytes, which the API rightly refuses (400 INVALID_IMAGE).
With it, positive cases carry real images of the declared type; negative cases still get random bytes.
"""

from __future__ import annotations

import ast
import io
import threading
from typing import Any

import schemathesis
from hypothesis import strategies as st
from PIL import Image
from pydantic import BaseModel, ValidationError

from app.http.routers.registry import parse_since
from app.http.schemas.frames import FrameMeta
from app.http.schemas.jobs import JobCreate
from app.services.core.errors import ValidationFailed
from app.services.registry.queries import check_area
from app.services.registry.records import HazardFilter
from app.services.sessions.metadata import MetadataLimits, validate_metadata
from app.services.tracking.hazard_map import parse_bbox, parse_near
from app.services.tracking.meta import FIELDS as META_FIELDS
from app.services.tracking.meta import frame_meta
from app.settings import RegistrySettings

# Hypothesis names a filter's lambda by parsing its source (`ast.parse`), and on Python 3.11 two threads parsing at
# once can fail with "AST constructor recursion depth mismatch": with `--workers 2` that is a Runtime Error of the
# run, not a finding (more query operations made it likely). Parsing is serialised in this process.
_parse = ast.parse
_parse_lock = threading.RLock()


def _parse_alone(*args: Any, **kwargs: Any) -> Any:
    with _parse_lock:
        return _parse(*args, **kwargs)


ast.parse = _parse_alone

SIZES = [(64, 48), (320, 180), (17, 31)]


def _images(fmt: str) -> list[bytes]:
    encoded = []
    for width, height in SIZES:
        image = Image.effect_noise((width, height), 64).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        encoded.append(buffer.getvalue())
    return encoded


for media_type, fmt in (("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/webp", "WEBP")):
    schemathesis.openapi.media_type(media_type, st.sampled_from(_images(fmt)))


@schemathesis.hook
def filter_body(context: schemathesis.HookContext, body: object) -> bool:
    """Session metadata has limits JSON Schema cannot state (total bytes, depth, keys at every level): a body
    past them is rightly refused with 422, so it is not a schema-valid request to expect 2xx for."""
    if not (isinstance(body, dict) and isinstance(body.get("metadata"), dict)):
        return True
    try:
        validate_metadata(body["metadata"], MetadataLimits())
    except ValidationFailed:
        return False
    return True


def _valid_json(model: type[BaseModel], raw: object) -> bool:
    try:
        model.model_validate_json(raw if isinstance(raw, str | bytes) and raw else "{}")
    except ValidationError:
        return False
    return True


def _parts(value: object) -> list[object]:
    """A multipart field as its parts: one value is one part, a list is one part per item."""
    return value if isinstance(value, list) else [] if value is None else [value]


def _sent_as_generated(body: object) -> bool:
    """Multipart sends a list as one part per item, so a field generated as an empty list sends nothing: a negative
    case whose violation is such a field (seen: `{"file": <1 byte>, "<random name>": []}`, an extra property that
    never reaches the wire) arrives as a valid request and is reported as "schema-violating request accepted"."""
    return not (isinstance(body, dict) and any(value == [] for value in body.values()))


def _job_parts_valid(body: object) -> bool:
    """A job's multipart parts carry JSON (FrameMeta, JobCreate) and pair the n-th `meta` with the n-th `file`:
    rules JSON Schema cannot state for multipart fields, so bodies that break them are not schema-valid cases."""
    if not isinstance(body, dict):
        return True
    metas, files = _parts(body.get("meta")), _parts(body.get("file"))
    if len(metas) > len(files):
        return False
    return all(_valid_json(FrameMeta, meta) for meta in metas) and _valid_json(JobCreate, body.get("job"))


@schemathesis.hook("filter_case")
def frame_metadata_and_map_queries(context: schemathesis.HookContext, case: Any) -> bool:
    """Rules across parameters that JSON Schema cannot state: a frame's `lat` and `lon` come together, each metadata
    field either as a query parameter or a multipart field; a map query has `bbox` or `near` (with `radius_m`),
    inside the coordinate ranges. Cases that break them are rightly refused (422), so they are not valid ones."""
    query = dict(case.query or {})
    path = case.operation.path
    if not _sent_as_generated(case.body):
        return False
    if path in ("/jobs", "/jobs/{job_id}/frames"):
        return _job_parts_valid(case.body)
    if path.startswith("/detect/"):
        form = case.body if isinstance(case.body, dict) else {}
        given = [v for k, v in [*query.items(), *form.items()] if k in META_FIELDS]
        if any(isinstance(value, list | dict) for value in given):  # a repeated field is refused (422), not valid
            return False
        try:
            frame_meta(
                {k: v for k, v in query.items() if k in META_FIELDS},
                {k: str(v) for k, v in form.items() if k in META_FIELDS},
            )
        except ValidationFailed:
            return False
        return True
    if path in REGISTRY_QUERIES:
        return _registry_query_valid(query)
    if path == "/hazards":
        bbox, near = query.get("bbox"), query.get("near")
        if (bbox is None) == (near is None) or (bbox is not None and "radius_m" in query):
            return False
        try:
            parse_bbox(str(bbox)) if bbox is not None else parse_near(str(near), 1.0)
        except ValidationFailed:
            return False
    return True


REGISTRY_QUERIES = ("/hazards/registry", "/hazards/export.geojson", "/hazards/export.csv", "/hazards/export/open311")
MAX_BBOX_KM2 = float(RegistrySettings.model_fields["max_bbox_km2"].default)


def _registry_query_valid(query: dict[str, Any]) -> bool:
    """A registry query's `bbox` has ordered corners inside the coordinate ranges and covers at most the default
    REGISTRY_MAX_BBOX_KM2, and `since` is a real instant:
    rules a pattern cannot state, refused with 422, so not valid cases."""
    try:
        if query.get("bbox") is not None:
            box = parse_bbox(str(query["bbox"]))
            check_area(HazardFilter(bbox=(box.min_lon, box.min_lat, box.max_lon, box.max_lat)), MAX_BBOX_KM2)
        if query.get("since") is not None:
            parse_since(str(query["since"]))
    except ValidationFailed:
        return False
    return True
