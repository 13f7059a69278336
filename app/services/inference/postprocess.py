"""Model output -> detections: confidence filter, class-aware NMS, top-k. Vectorised numpy throughout."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.services.inference.types import OutputFormat

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]


def iou_one_to_many(box: FloatArray, boxes: FloatArray) -> FloatArray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou: FloatArray = inter / np.maximum(area + areas - inter, 1e-9)
    return iou


def nms(boxes: FloatArray, scores: FloatArray, class_ids: IntArray, iou_threshold: float, max_det: int) -> IntArray:
    """Class-aware greedy NMS; returns kept indices, best score first."""
    if len(boxes) == 0:
        return np.empty(0, np.intp)
    # Offsetting each class into its own region makes one pass class-aware (the torchvision batched_nms trick).
    offsets = class_ids.astype(np.float32)[:, None] * (float(boxes.max()) + 1.0)
    shifted = boxes + offsets
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[iou_one_to_many(shifted[best], shifted[rest]) <= iou_threshold]
    return np.asarray(keep, np.intp)


def decode_output(
    output: FloatArray, output_format: OutputFormat, conf: float, iou: float, max_det: int
) -> tuple[FloatArray, FloatArray, IntArray]:
    """One image's output -> (xyxy boxes in model-input pixels, scores, class ids), best first."""
    if output_format is OutputFormat.END_TO_END:
        rows = output[0]
        rows = rows[rows[:, 4] >= conf]
        rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_det]
        return rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32), rows[:, 5].astype(np.intp)
    predictions = output[0].T  # [N, 4 + nc]
    class_scores = predictions[:, 4:]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(class_ids)), class_ids]
    mask = scores >= conf
    predictions, scores, class_ids = predictions[mask], scores[mask], class_ids[mask]
    boxes = np.empty((len(predictions), 4), np.float32)
    half_w, half_h = predictions[:, 2] / 2, predictions[:, 3] / 2
    boxes[:, 0] = predictions[:, 0] - half_w
    boxes[:, 1] = predictions[:, 1] - half_h
    boxes[:, 2] = predictions[:, 0] + half_w
    boxes[:, 3] = predictions[:, 1] + half_h
    keep = nms(boxes, scores, class_ids, iou, max_det)
    return boxes[keep], scores[keep].astype(np.float32), class_ids[keep]
