"""A ModelRegistry over the committed models (models/: the FP16 default and its INT8 sibling), with real engines:
what the integration tests of the parts above the registry run on."""

from __future__ import annotations

from pathlib import Path

from app.services.inference.engine import DetectionEngine
from app.services.inference.model import load_model
from app.services.inference.registry import ModelRegistry
from tests.conftest import MODEL_DIR

DEFAULT_VERSION = MODEL_DIR.name
OTHER_VERSION = "best0408_int8_openvino_model"


def real_registry(model_cache: Path) -> ModelRegistry:
    def build(path: Path, name: str) -> DetectionEngine:
        model = load_model(path, cache_dir=model_cache, name=name)
        return DetectionEngine(model, 1, 16, max_pixels=40_000_000)

    async def warm(engine: DetectionEngine) -> None:
        await engine.warm_up(1)

    return ModelRegistry(MODEL_DIR.parent, MODEL_DIR, build, warm, memory_limit_mb=65536, drain_seconds=10)
