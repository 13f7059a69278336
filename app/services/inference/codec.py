"""A detection result as JSON: the one shape answers, history, job results, the cache and remote workers share."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from app.services.inference.types import Detection, DetectionResult, ModelInfo, OutputFormat


def detection_json(detection: Detection) -> dict[str, Any]:
    """One detection as every answer and history entry shows it: the box nested, like the API's schema."""
    d = detection
    return {
        "label": d.label,
        "class_id": d.class_id,
        "confidence": d.confidence,
        "box": {"x1": d.x1, "y1": d.y1, "x2": d.x2, "y2": d.y2},
    }


def detection_from_json(data: dict[str, Any]) -> Detection:
    box = data["box"]
    return Detection(data["label"], data["class_id"], data["confidence"], box["x1"], box["y1"], box["x2"], box["y2"])


def model_json(info: ModelInfo) -> dict[str, Any]:
    return {**asdict(info), "class_names": list(info.class_names), "output_format": info.output_format.value}


def model_from_json(data: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        **{**data, "class_names": tuple(data["class_names"]), "output_format": OutputFormat(data["output_format"])}
    )


def result_json(result: DetectionResult, model: ModelInfo) -> dict[str, Any]:
    return {
        "detections": [detection_json(d) for d in result.detections],
        "image": {"width": result.width, "height": result.height},
        "timings_ms": result.timings_ms,
        "cached": result.cached,
        "model": model_json(model),
    }


def result_from_json(data: dict[str, Any]) -> tuple[DetectionResult, ModelInfo]:
    detections = [detection_from_json(d) for d in data["detections"]]
    image = data["image"]
    result = DetectionResult(detections, image["width"], image["height"], data["timings_ms"], data["cached"])
    return result, model_from_json(data["model"])
