"""Stream slots: a limit per process and per key, each slot given back however its holder ends."""

from __future__ import annotations

import pytest

from app.services.observability.metrics import Metrics
from app.services.streams.slots import StreamSlots


def test_a_key_past_its_limit_is_refused_while_others_and_anonymous_callers_still_get_slots() -> None:
    slots = StreamSlots(per_process=4, per_key=2, metrics=Metrics())
    with slots.hold("k1") as first, slots.hold("k1") as second, slots.hold("k1") as third:
        assert (first, second, third) == (None, None, "key")
        with slots.hold("k2") as other, slots.hold(None) as anonymous, slots.hold(None) as over:
            assert (other, anonymous, over) == (None, None, "process")
    assert slots.open == 0


def test_a_slot_is_given_back_when_its_holder_fails() -> None:
    slots = StreamSlots(per_process=4, per_key=1, metrics=Metrics())
    with pytest.raises(RuntimeError), slots.hold("k1"):
        raise RuntimeError("the stream failed")
    with slots.hold("k1") as again:
        assert again is None
