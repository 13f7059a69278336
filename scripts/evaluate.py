"""mAP50 of every model version in the repository, run through the service's own engine, on a held-out split.

`make eval`; one `<version> mAP50=<value>` line per version, then, last, `mAP50=<value>` of the default
version. The split uses a seed neither the training nor the INT8 calibration ever saw.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scenes import CLASS_NAMES, Scene, generate_scene

from app.services.inference.engine import DetectionEngine
from app.services.inference.model import load_model
from app.services.inference.registry import is_model_folder
from app.services.inference.types import DetectOptions

HELD_OUT_SEED = 777
DEFAULT_VERSION = "best0408_openvino_model"
IOU_MATCH = 0.5


def box_iou(box: npt.NDArray[np.float64], boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.asarray(inter / np.maximum(union, 1e-9))


def average_precision(scores: list[float], hits: list[bool], positives: int) -> float:
    """Area under the interpolated precision-recall curve (all points), as in VOC2010+/Ultralytics."""
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(np.asarray(hits, dtype=float)[order])
    recall = tp / positives
    precision = tp / np.arange(1, len(tp) + 1)
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[1.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.where(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def match_class(
    predicted: list[tuple[float, npt.NDArray[np.float64]]], truths: npt.NDArray[np.float64]
) -> list[tuple[float, bool]]:
    """Greedy matching, best score first; each ground-truth box can be claimed once."""
    claimed = np.zeros(len(truths), bool)
    outcomes = []
    for score, box in sorted(predicted, key=lambda p: -p[0]):
        hit = False
        if len(truths):
            ious = box_iou(box, truths)
            ious[claimed] = 0
            best = int(ious.argmax())
            if ious[best] >= IOU_MATCH:
                claimed[best] = hit = True
        outcomes.append((score, hit))
    return outcomes


async def evaluate(model_dir: Path, count: int, seed: int) -> dict[str, float]:
    engine = DetectionEngine(load_model(model_dir), pool_size=2, max_queue=8, max_pixels=50_000_000)
    options = DetectOptions(conf=0.001, iou=0.6, max_det=300)
    rng = np.random.default_rng(seed)
    per_class: dict[int, list[tuple[float, bool]]] = {c: [] for c in range(len(CLASS_NAMES))}
    positives = dict.fromkeys(range(len(CLASS_NAMES)), 0)
    for _ in range(count):
        scene: Scene = generate_scene(rng)
        buffer = io.BytesIO()
        scene.image.save(buffer, format="JPEG", quality=90)
        result = await engine.detect(buffer.getvalue(), options, time.monotonic() + 10)
        for class_id in per_class:
            truths = np.array([h.box for h in scene.hazards if h.class_id == class_id], float).reshape(-1, 4)
            positives[class_id] += len(truths)
            predicted = [
                (d.confidence, np.array([d.x1, d.y1, d.x2, d.y2])) for d in result.detections if d.class_id == class_id
            ]
            per_class[class_id].extend(match_class(predicted, truths))
    return {
        CLASS_NAMES[c]: average_precision([s for s, _ in per_class[c]], [h for _, h in per_class[c]], positives[c])
        for c in per_class
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, help="one version; default: every version in --repository")
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    args = parser.parse_args()
    versions = (
        [args.model_dir] if args.model_dir else sorted(p for p in args.repository.iterdir() if is_model_folder(p))
    )
    scores = {}
    for model_dir in versions:
        per_class = asyncio.run(evaluate(model_dir, args.count, args.seed))
        for name, ap in per_class.items():
            print(f"{model_dir.name} AP50[{name}]={ap:.4f}")
        scores[model_dir.name] = float(np.nanmean(list(per_class.values())))
    for name, score in scores.items():
        print(f"{name} mAP50={score:.4f}")
    print(f"mAP50={scores.get(DEFAULT_VERSION, next(iter(scores.values()))):.4f}")  # the default version, last


if __name__ == "__main__":
    main()
