"""Model loading: the committed export, an end-to-end (NMS-free) export with dynamic input, and broken folders."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
import yaml
from PIL import Image

from app.services.inference.engine import DetectionEngine
from app.services.inference.model import load_model
from app.services.inference.types import DetectOptions, ModelLoadError, OutputFormat
from tests.conftest import MODEL_DIR
from tests.support.images import encode

SCENE = Path(__file__).resolve().parents[3] / "fixtures" / "scenes" / "scene_0.png"

E2E_ROWS = [[8, 8, 24, 24, 0.9, 1], [0, 0, 4, 4, 0.1, 0]]  # x1, y1, x2, y2, score, class in 64x64 input pixels


def write_end_to_end_export(folder: Path, output_rows: list[list[float]]) -> Path:
    """A tiny IR shaped like a YOLO26 export: dynamic [?, 3, ?, ?] input, [1, N, 6] output."""
    image = ops.parameter(ov.PartialShape([-1, 3, -1, -1]), ov.Type.f32, name="x.1")
    zero = ops.multiply(ops.reduce_mean(image, np.array([0, 1, 2, 3]), keep_dims=False), np.float32(0))
    rows = ops.add(ops.constant(np.array([output_rows], np.float32)), zero)
    folder.mkdir(parents=True)
    ov.save_model(ov.Model([rows], [image], "e2e"), folder / "tiny.xml", compress_to_fp16=False)
    metadata = {"task": "detect", "imgsz": [64, 64], "stride": 32, "names": {0: "pothole", 1: "traffic_cone"}}
    (folder / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    return folder


def test_committed_model_is_a_raw_yolo_export_with_its_metadata() -> None:
    model = load_model(MODEL_DIR)
    metadata = yaml.safe_load((MODEL_DIR / "metadata.yaml").read_text())
    assert model.info.output_format is OutputFormat.RAW
    assert model.info.class_names == tuple(metadata["names"].values())
    assert [model.info.input_height, model.info.input_width] == metadata["imgsz"]
    assert model.info.name == "best0408_openvino_model"  # the version: its folder in the repository
    assert len(model.info.version) == 12
    assert model.optimal_requests >= 1


async def test_a_pinned_precision_is_compiled_as_asked_and_finds_the_same_hazards() -> None:
    # MODEL_INFERENCE_PRECISION=f32: what a fleet of mixed CPUs (bf16 or not) or a capped ISA needs.
    default = load_model(MODEL_DIR, performance_hint="ADAPTIVE")
    pinned = load_model(MODEL_DIR, performance_hint="ADAPTIVE", inference_precision="f32")
    assert default.precision in {"bf16", "f32"}  # OpenVINO's choice: bf16 where the CPU has it
    assert pinned.precision == "f32"
    assert pinned.solo is not None  # both of ADAPTIVE's compiles take it
    assert pinned.solo.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    frame = SCENE.read_bytes()
    found = []
    for model in (default, pinned):
        engine = DetectionEngine(model, pool_size=1, max_queue=4, max_pixels=40_000_000)
        result = await engine.detect(frame, DetectOptions(conf=0.25, iou=0.45), time.monotonic() + 10)
        found.append(
            sorted((d.class_id, round(d.x1), round(d.y1), round(d.x2), round(d.y2)) for d in result.detections)
        )
    assert found[0], "the scene holds hazards"
    assert [d[0] for d in found[0]] == [d[0] for d in found[1]]
    assert np.abs(np.array(found[0])[:, 1:] - np.array(found[1])[:, 1:]).max() <= 2  # pixels


async def test_end_to_end_export_with_dynamic_input_is_served(tmp_path: Path) -> None:
    model = load_model(write_end_to_end_export(tmp_path / "tiny_openvino_model", E2E_ROWS))
    assert model.info.output_format is OutputFormat.END_TO_END
    engine = DetectionEngine(model, pool_size=1, max_queue=4, max_pixels=1_000_000)
    result = await engine.detect(
        encode(Image.new("RGB", (128, 128)), "PNG"), DetectOptions(conf=0.25), time.monotonic() + 5
    )
    assert [(d.label, d.confidence) for d in result.detections] == [("traffic_cone", 0.9)]
    detection = result.detections[0]
    assert (detection.x1, detection.y1, detection.x2, detection.y2) == (16, 16, 48, 48)  # scaled x2 back to 128 px


def copy_model(tmp_path: Path) -> Path:
    target = tmp_path / "best_openvino_model"
    shutil.copytree(MODEL_DIR, target)
    return target


@pytest.mark.parametrize(
    ("breakage", "named_file"),
    [
        (lambda d: shutil.rmtree(d), "best_openvino_model"),
        (lambda d: (d / "metadata.yaml").unlink(), "metadata.yaml"),
        (lambda d: (d / "metadata.yaml").write_text("task: detect\n"), "metadata.yaml"),
        (lambda d: (d / "metadata.yaml").write_text("names: {0: a}\ntask: segment\n"), "metadata.yaml"),
        (lambda d: (d / "best0408.bin").unlink(), "best0408.bin"),
        (lambda d: (d / "best0408.xml").write_text("<net><broken"), "best0408.xml"),
        (lambda d: (d / "best0408.xml").unlink(), "best_openvino_model"),
    ],
    ids=["missing-folder", "no-metadata", "no-names", "not-detect", "no-weights", "corrupt-xml", "no-xml"],
)
def test_broken_model_folder_gives_an_error_naming_the_file(
    tmp_path: Path, breakage: Callable[[Path], object], named_file: str
) -> None:
    folder = copy_model(tmp_path)
    breakage(folder)
    with pytest.raises(ModelLoadError, match=named_file):
        load_model(folder)


def test_output_that_is_not_a_detection_head_is_refused(tmp_path: Path) -> None:
    folder = write_end_to_end_export(tmp_path / "odd_openvino_model", [[1, 2, 3, 4, 5]])  # [1, 1, 5]
    with pytest.raises(ModelLoadError, match="unsupported detection output shape"):
        load_model(folder)


def test_a_cache_folder_that_cannot_be_made_means_no_cache_not_no_model(tmp_path: Path) -> None:
    blocker = tmp_path / "read-only-root"
    blocker.write_text("a file where the cache folder would go, as on a read-only filesystem")
    model = load_model(MODEL_DIR, cache_dir=blocker / "model-cache")
    assert model.info.name == MODEL_DIR.name
