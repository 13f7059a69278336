"""`make eval`'s yardstick: the AP computation itself, and the committed model on a held-out split."""

from __future__ import annotations

import numpy as np
import pytest
from evaluate import HELD_OUT_SEED, average_precision, evaluate, match_class

from tests.conftest import MODEL_DIR


def test_average_precision_of_a_perfect_ranking_is_one() -> None:
    assert average_precision([0.9, 0.8], [True, True], positives=2) == pytest.approx(1.0)


def test_average_precision_counts_misses_and_false_alarms() -> None:
    # One hit ranked below a false alarm, one object never found: precision 0.5 at recall 0.5.
    assert average_precision([0.9, 0.8], [False, True], positives=2) == pytest.approx(0.25)


def test_a_box_can_be_claimed_once() -> None:
    truth = np.array([[0, 0, 10, 10]], float)
    outcomes = match_class([(0.9, np.array([0, 0, 10, 10.0])), (0.8, np.array([0, 0, 10, 9.0]))], truth)
    assert outcomes == [(0.9, True), (0.8, False)]


async def test_committed_model_reaches_the_target_map50_on_held_out_scenes() -> None:
    per_class = await evaluate(MODEL_DIR, count=60, seed=HELD_OUT_SEED)
    assert float(np.nanmean(list(per_class.values()))) >= 0.80


async def test_int8_version_stays_within_one_point_of_fp16() -> None:
    """The quantized sibling is only worth serving if it finds what the FP16 model finds."""
    fp16 = await evaluate(MODEL_DIR, count=60, seed=HELD_OUT_SEED)
    int8 = await evaluate(MODEL_DIR.parent / "best0408_int8_openvino_model", count=60, seed=HELD_OUT_SEED)
    gap = float(np.nanmean(list(fp16.values()))) - float(np.nanmean(list(int8.values())))
    assert gap <= 0.01
