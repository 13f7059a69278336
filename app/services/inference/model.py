"""Load an Ultralytics OpenVINO export and compile it with preprocessing folded in."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openvino as ov
import structlog
import yaml
from openvino.preprocess import ColorFormat, PrePostProcessor

from app.services.inference.signal_stack import signal_stack_kept
from app.services.inference.types import ModelInfo, ModelLoadError, OutputFormat

log = structlog.get_logger(__name__)
LATENCY, THROUGHPUT = "LATENCY", "THROUGHPUT"  # OpenVINO's performance hints
# Ours: both compiles, LATENCY for a frame that finds the engine idle, THROUGHPUT streams for frames that overlap.
ADAPTIVE = "ADAPTIVE"


@dataclass(frozen=True)
class LoadedModel:
    info: ModelInfo
    compiled: ov.CompiledModel
    optimal_requests: int
    compile_seconds: float = 0.0  # read + fold + compile (near zero when the compile cache has it)
    solo: ov.CompiledModel | None = None  # ADAPTIVE: the LATENCY compile for a frame alone (`compiled` has streams)
    precision: str = ""  # what the device computes in ("bf16", "f32": INFERENCE_PRECISION_HINT once compiled)


def _read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "metadata.yaml"
    if not path.is_file():
        raise ModelLoadError(f"model metadata not found: {path}")
    try:
        metadata = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"model metadata is not valid YAML: {path}: {exc}") from exc
    if not isinstance(metadata, dict) or not metadata.get("names"):
        raise ModelLoadError(f"model metadata has no class names: {path}")
    if metadata.get("task", "detect") != "detect":
        raise ModelLoadError(f"model task is {metadata.get('task')!r}, expected 'detect': {path}")
    return metadata


def _find_ir(model_dir: Path) -> Path:
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory not found: {model_dir}")
    xmls = sorted(model_dir.glob("*.xml"))
    if len(xmls) != 1:
        raise ModelLoadError(f"expected exactly one OpenVINO .xml in {model_dir}, found {len(xmls)}")
    if not xmls[0].with_suffix(".bin").is_file():
        raise ModelLoadError(f"model weights not found: {xmls[0].with_suffix('.bin')}")
    return xmls[0]


def _weights_digest(weights: Path) -> str:
    """The version clients see: it changes exactly when the weights do."""
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:12]


def _class_names(names: Any) -> tuple[str, ...]:
    if isinstance(names, dict):
        return tuple(str(names[key]) for key in sorted(names, key=int))
    return tuple(str(name) for name in names)


def _input_size(metadata: dict[str, Any]) -> tuple[int, int]:
    imgsz = metadata.get("imgsz", [640, 640])
    if isinstance(imgsz, int):
        return imgsz, imgsz
    return int(imgsz[0]), int(imgsz[1])


def _output_format(shape: ov.PartialShape, class_count: int, xml: Path) -> OutputFormat:
    dims = [d.get_length() if d.is_static else -1 for d in shape]
    if len(dims) == 3 and dims[1] == 4 + class_count:
        return OutputFormat.RAW
    if len(dims) == 3 and dims[2] == 6:
        return OutputFormat.END_TO_END
    raise ModelLoadError(f"unsupported detection output shape {dims} for {class_count} classes: {xml}")


def _with_folded_preprocessing(model: ov.Model, height: int, width: int) -> ov.Model:
    """uint8 NHWC RGB in; the cast, 1/255 scaling and NCHW layout change run inside the compiled graph."""
    if model.input(0).get_partial_shape().is_dynamic:
        model.reshape({model.input(0): ov.PartialShape([1, 3, height, width])})
    ppp = PrePostProcessor(model)
    ppp.input(0).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.RGB)
    ppp.input(0).model().set_layout(ov.Layout("NCHW"))
    ppp.input(0).preprocess().convert_element_type(ov.Type.f32).scale(255.0)
    ppp.output(0).tensor().set_element_type(ov.Type.f32)
    return ppp.build()


def load_model(
    model_dir: Path,
    *,
    device: str = "CPU",
    performance_hint: str = LATENCY,
    inference_threads: int | None = None,
    inference_precision: str | None = None,
    cache_dir: Path | None = None,
    name: str | None = None,
) -> LoadedModel:
    """Read, fold preprocessing in and compile one export; `name` (default: the folder's) is what answers say."""
    started = time.perf_counter()
    metadata = _read_metadata(model_dir)
    xml = _find_ir(model_dir)
    class_names = _class_names(metadata["names"])
    height, width = _input_size(metadata)
    core = ov.Core()
    try:
        model = core.read_model(xml)
    except RuntimeError as exc:
        raise ModelLoadError(f"OpenVINO could not read {xml}: {exc}") from exc
    output_format = _output_format(model.output(0).get_partial_shape(), len(class_names), xml)
    model = _with_folded_preprocessing(model, height, width)
    # bf16 stays OpenVINO's default on CPUs that have it: same detections, ~1.7x faster than f32 (measured).
    config: dict[str, Any] = {}
    if inference_threads:
        config["INFERENCE_NUM_THREADS"] = inference_threads
    if inference_precision:
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    if cache_dir is not None and _writable(cache_dir):  # a re-load of the same IR then skips compilation
        config["CACHE_DIR"] = str(cache_dir)
    adaptive = performance_hint == ADAPTIVE
    try:
        with signal_stack_kept():  # the compile's own signal stack would outlive nothing (signal_stack.py)
            compiled = core.compile_model(
                model, device, {**config, "PERFORMANCE_HINT": THROUGHPUT if adaptive else performance_hint}
            )
            solo = core.compile_model(model, device, {**config, "PERFORMANCE_HINT": LATENCY}) if adaptive else None
        compile_seconds = time.perf_counter() - started
    except RuntimeError as exc:
        raise ModelLoadError(f"OpenVINO could not compile {xml} for {device}: {exc}") from exc
    info = ModelInfo(
        name=name or model_dir.name,
        version=_weights_digest(xml.with_suffix(".bin")),
        class_names=class_names,
        input_height=height,
        input_width=width,
        stride=int(metadata.get("stride", 32)),
        output_format=output_format,
        device=device,
    )
    optimal = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    return LoadedModel(info, compiled, optimal, round(compile_seconds, 3), solo, _precision(compiled))


def _precision(compiled: ov.CompiledModel) -> str:
    """What the device computes in ("bf16", "f32", ...); "" where the device does not say."""
    try:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    except RuntimeError:
        return ""


def _writable(cache_dir: Path) -> bool:
    """A cache folder that cannot be made or written (a read-only root filesystem) means no cache, not no model."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("model_cache_unusable", cache_dir=str(cache_dir), error=str(exc))
        return False
    if not os.access(cache_dir, os.W_OK):
        log.warning("model_cache_unusable", cache_dir=str(cache_dir), error="not writable")
        return False
    return True
