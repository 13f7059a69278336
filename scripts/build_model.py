"""Rebuild the demo hazard model: generate scenes, train YOLOv8n from its yaml, export to OpenVINO IR.

Run through `make model` (needs `pip install -e '.[train]'`; no network). Writes
`models/best0408_openvino_model/` and the Ultralytics reference predictions the
tests compare the service's own engine against.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

BUILD = Path("build/model").resolve()
# Keep Ultralytics offline and inside the build folder: no settings in $HOME, no auto-installs.
os.environ.setdefault("YOLO_CONFIG_DIR", str(BUILD / "yolo-config"))
os.environ.setdefault("MPLCONFIGDIR", str(BUILD / "mpl-config"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from scenes import generate_scene, write_dataset  # noqa: E402
from ultralytics import YOLO  # noqa: E402

MODEL_STEM = "best0408"
FIXTURES = Path("tests/fixtures")
REFERENCE_SEED = 9001
REFERENCE_SCENES = 8


def train(config: Path, imgsz: int, epochs: int, seed: int) -> Path:
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(config),
        imgsz=imgsz,
        epochs=epochs,
        batch=16,
        device="cpu",
        workers=0,
        amp=False,
        seed=seed,
        deterministic=True,
        pretrained=False,
        plots=False,
        project=str(BUILD / "runs"),
        name="train",
        exist_ok=True,
        verbose=False,
    )
    best = BUILD / "runs" / "train" / "weights" / "best.pt"
    weights = BUILD / f"{MODEL_STEM}.pt"
    shutil.copy(best, weights)
    return weights


def export(weights: Path, imgsz: int, out_dir: Path) -> Path:
    exported = Path(YOLO(str(weights)).export(format="openvino", imgsz=imgsz, quantize=16))
    target = out_dir / exported.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(exported, target)
    return target


def write_reference(model_dir: Path, imgsz: int) -> None:
    """Ultralytics' own predictions on fixed scenes: the yardstick for the service's engine."""
    scenes_dir = FIXTURES / "scenes"
    scenes_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(REFERENCE_SEED)
    model = YOLO(str(model_dir), task="detect")
    records = []
    for index in range(REFERENCE_SCENES):
        scene = generate_scene(rng)
        name = f"scene_{index}.png"
        scene.image.save(scenes_dir / name)
        image = Image.open(scenes_dir / name).convert("RGB")
        result = model.predict(image, imgsz=imgsz, conf=0.25, iou=0.45, verbose=False)[0]
        records.append(
            {
                "image": name,
                "truth": [{"class_id": h.class_id, "box": list(h.box)} for h in scene.hazards],
                "reference": [
                    {"class_id": int(c), "confidence": float(s), "box": [float(v) for v in b]}
                    for b, s, c in zip(
                        result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), result.boxes.cls.tolist(), strict=True
                    )
                ],
            }
        )
    (FIXTURES / "reference_predictions.json").write_text(json.dumps(records, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=408)
    parser.add_argument("--out", type=Path, default=Path("models"))
    args = parser.parse_args()
    config = write_dataset(BUILD / "dataset", train=400, val=80, seed=args.seed)
    weights = train(config, args.imgsz, args.epochs, args.seed)
    model_dir = export(weights, args.imgsz, args.out)
    write_reference(model_dir, args.imgsz)
    print(f"model written to {model_dir}")


if __name__ == "__main__":
    main()
