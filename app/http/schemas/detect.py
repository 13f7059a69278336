"""The answer of `POST /detect/{session_id}`: one frame's detections; a session's history repeats them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Box(BaseModel):
    """Pixels of the uploaded (EXIF-oriented) image: top-left and bottom-right corners."""

    x1: float
    y1: float
    x2: float
    y2: float


class DetectionOut(BaseModel):
    label: str
    class_id: int
    confidence: float
    box: Box
    hazard_id: str | None = Field(
        None,
        description="The hazard this detection is part of across frames; null when the frame was served "
        "without the session store (degraded) or the entry predates tracking.",
    )
    new_hazard: bool = Field(
        False, description="True on the one frame that confirms the hazard (TRACK_MIN_HITS frames): alert once."
    )


class ImageSize(BaseModel):
    width: int
    height: int


class ModelRef(BaseModel):
    name: str = Field(description="The model version (its folder in the model repository).")
    version: str = Field(description="Digest of the version's weights: changes exactly when they do.")


class SessionCheck(BaseModel):
    verified: bool = Field(description="The session was checked against the session store.")
    degraded: bool = Field(description="Served without the session store (fail-open); history is written later.")
    frame_count: int | None = Field(description="Frames of the session so far; null when degraded.")


class DetectResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "6f1c2b7e0a9d4c3f8e5b1a2d3c4e5f60",
                    "session_id": "k3VbE2Jw4oKq5mSx0yPdLr8TfHn1aC7u",
                    "detections": [
                        {
                            "label": "pothole",
                            "class_id": 0,
                            "confidence": 0.91,
                            "box": {"x1": 412.5, "y1": 388.0, "x2": 596.25, "y2": 470.75},
                        }
                    ],
                    "image": {"width": 1280, "height": 720},
                    "model": {"name": "best0408", "version": "a381a085636d"},
                    "session": {"verified": True, "degraded": False, "frame_count": 12},
                    "timings_ms": {
                        "decode": 3.1,
                        "preprocess": 0.9,
                        "queue_wait": 0.0,
                        "infer": 11.4,
                        "postprocess": 0.3,
                    },
                }
            ]
        }
    )

    request_id: str
    session_id: str
    detections: list[DetectionOut]
    image: ImageSize
    model: ModelRef
    session: SessionCheck
    timings_ms: dict[str, float] = Field(description="decode, preprocess, queue_wait, infer, postprocess")
