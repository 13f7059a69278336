"""Output decoding and class-aware NMS on hand-made boxes."""

from __future__ import annotations

import numpy as np

from app.services.inference.postprocess import decode_output, nms
from app.services.inference.types import OutputFormat


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float32)


def test_nms_keeps_the_best_of_overlapping_boxes_of_one_class() -> None:
    kept = nms(
        boxes((0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60)),
        np.array([0.8, 0.9, 0.7], np.float32),
        np.array([0, 0, 0]),
        0.45,
        100,
    )
    assert kept.tolist() == [1, 2]


def test_nms_keeps_overlapping_boxes_of_different_classes() -> None:
    kept = nms(boxes((0, 0, 10, 10), (1, 1, 11, 11)), np.array([0.8, 0.9], np.float32), np.array([0, 1]), 0.45, 100)
    assert sorted(kept.tolist()) == [0, 1]


def test_nms_threshold_is_inclusive_of_lower_overlap() -> None:
    # IoU of these two is 50 / 150 = 0.333: kept at 0.45, suppressed at 0.3.
    pair = boxes((0, 0, 10, 10), (5, 0, 15, 10))
    scores, classes = np.array([0.9, 0.8], np.float32), np.array([0, 0])
    assert nms(pair, scores, classes, 0.45, 100).tolist() == [0, 1]
    assert nms(pair, scores, classes, 0.3, 100).tolist() == [0]


def test_nms_stops_at_max_det_best_first() -> None:
    many = boxes(*((i * 20, 0, i * 20 + 10, 10) for i in range(10)))
    scores = np.linspace(0.1, 0.9, 10).astype(np.float32)
    assert nms(many, scores, np.zeros(10, int), 0.45, 3).tolist() == [9, 8, 7]


def test_nms_of_nothing_is_nothing() -> None:
    assert nms(np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, int), 0.45, 10).size == 0


def test_raw_output_is_decoded_from_centre_format_with_the_best_class() -> None:
    # [1, 4 + nc, N] with nc = 2 and N = 3 anchors.
    output = np.zeros((1, 6, 3), np.float32)
    output[0, :4, 0] = (50, 40, 20, 10)  # cx, cy, w, h
    output[0, 4:, 0] = (0.1, 0.8)
    output[0, :4, 1] = (51, 40, 20, 10)  # a near-duplicate, lower score: suppressed
    output[0, 4:, 1] = (0.05, 0.6)
    output[0, 4:, 2] = (0.1, 0.1)  # below the confidence threshold
    found, scores, classes = decode_output(output, OutputFormat.RAW, conf=0.25, iou=0.45, max_det=100)
    assert found.tolist() == [[40, 35, 60, 45]]
    assert classes.tolist() == [1]
    assert scores.tolist() == [np.float32(0.8)]


def test_end_to_end_output_is_filtered_and_sorted() -> None:
    output = np.array([[[0, 0, 10, 10, 0.3, 2], [5, 5, 20, 20, 0.9, 0], [1, 1, 2, 2, 0.1, 1]]], np.float32)
    found, scores, classes = decode_output(output, OutputFormat.END_TO_END, conf=0.25, iou=0.45, max_det=100)
    assert classes.tolist() == [0, 2]
    assert found.tolist() == [[5, 5, 20, 20], [0, 0, 10, 10]]
    assert scores.tolist() == [np.float32(0.9), np.float32(0.3)]
