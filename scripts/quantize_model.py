"""INT8 sibling of the demo model: NNCF post-training quantization of the FP16 IR on generated scenes.

Run through `make model-int8` (its own venv with nncf; no torch, no network). Reads
`models/best0408_openvino_model/`, writes `models/best0408_int8_openvino_model/` laid out like an
Ultralytics `int8=True` export, so the service loads both the same way. Calibration scenes use a seed
the evaluation never sees, and go through the service's own decode + letterbox.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import nncf
import numpy as np
import numpy.typing as npt
import openvino as ov
import yaml
from scenes import generate_scene

from app.services.inference.preprocess import decode, letterbox

CALIBRATION_SEED = 4080
# NNCF's guidance for YOLO: at least 300 images.
CALIBRATION_SCENES = 320


def calibration_batches(count: int, seed: int, height: int, width: int) -> Iterator[npt.NDArray[np.float32]]:
    """What the IR's own input expects: f32 NCHW in [0, 1] (the service folds this conversion into the graph)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        encoded = io.BytesIO()
        generate_scene(rng).image.save(encoded, format="JPEG", quality=90)
        batch, _ = letterbox(decode(encoded.getvalue(), height, width, 40_000_000), height, width)
        yield batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def head_ignored_scope(model: ov.Model) -> nncf.IgnoredScope:
    """Keep the Detect head's box decoding (DFL, anchors, strides) in float, as Ultralytics' own INT8 export does."""
    indices = [
        int(m.group(1)) for op in model.get_ops() if (m := re.match(r"__module\.model\.(\d+)", op.get_friendly_name()))
    ]
    head = f"__module\\.model\\.{max(indices)}"
    return nncf.IgnoredScope(
        patterns=[
            f".*{head}/.*/Add",
            f".*{head}/.*/Sub.*",
            f".*{head}/.*/Mul.*",
            f".*{head}/.*/Div.*",
            f".*{head}\\.dfl.*",
        ],
        types=["Sigmoid"],
        validate=False,
    )


def quantize(source: Path, target: Path, count: int, seed: int) -> Path:
    metadata = yaml.safe_load((source / "metadata.yaml").read_text())
    height, width = metadata["imgsz"]
    xml = next(source.glob("*.xml"))
    model = ov.Core().read_model(xml)
    dataset = nncf.Dataset(list(calibration_batches(count, seed, height, width)))
    quantized = nncf.quantize(
        model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=count, ignored_scope=head_ignored_scope(model)
    )
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    ov.save_model(quantized, target / xml.name, compress_to_fp16=False)
    metadata["args"] = {**(metadata.get("args") or {}), "quantize": 8, "int8": True}
    metadata["description"] = f"{metadata.get('description', '')} (INT8, NNCF PTQ on {count} generated scenes)"
    (target / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=Path("models/best0408_openvino_model"))
    parser.add_argument("--target", type=Path, default=Path("models/best0408_int8_openvino_model"))
    parser.add_argument("--count", type=int, default=CALIBRATION_SCENES)
    parser.add_argument("--seed", type=int, default=CALIBRATION_SEED)
    args = parser.parse_args()
    print(f"INT8 model written to {quantize(args.source, args.target, args.count, args.seed)}")


if __name__ == "__main__":
    main()
