"""Every move from every state: the legal ones lead where the lifecycle says, the others are 409 with the allowed."""

from __future__ import annotations

import pytest

from app.services.core.errors import TransitionNotAllowed, ValidationFailed
from app.services.registry.lifecycle import Category, Move, Status, allowed_moves, next_status, verdict_move

S, M = Status, Move
LEGAL = {
    (S.OPEN, M.VERIFY): S.VERIFIED,
    (S.OPEN, M.REJECT): S.REJECTED,
    (S.OPEN, M.SUSPECT_FIXED): S.SUSPECTED_FIXED,
    (S.OPEN, M.CLOSE): S.CLOSED,
    (S.VERIFIED, M.SUSPECT_FIXED): S.SUSPECTED_FIXED,
    (S.VERIFIED, M.CLOSE): S.CLOSED,
    (S.SUSPECTED_FIXED, M.CLOSE): S.CLOSED,
    (S.SUSPECTED_FIXED, M.REOPEN): S.OPEN,
    (S.CLOSED, M.REOPEN): S.OPEN,
}
ILLEGAL = [(status, move) for status in Status for move in Move if (status, move) not in LEGAL]


@pytest.mark.parametrize(("status", "move"), list(LEGAL))
def test_a_legal_move_leads_to_its_state(status: Status, move: Move) -> None:
    assert next_status(status, move) is LEGAL[status, move]


@pytest.mark.parametrize(("status", "move"), ILLEGAL)
def test_an_illegal_move_is_409_with_the_allowed_moves(status: Status, move: Move) -> None:
    with pytest.raises(TransitionNotAllowed) as refused:
        next_status(status, move)
    assert refused.value.status == 409
    assert refused.value.details == {
        "status": status.value,
        "move": move.value,
        "allowed": [m.value for (s, m) in LEGAL if s is status],
    }


def test_a_rejected_hazard_allows_no_move() -> None:
    assert allowed_moves(Status.REJECTED) == []


@pytest.mark.parametrize("category", [c for c in Category if c is not Category.NOT_AN_ISSUE])
def test_a_verdict_with_a_category_verifies(category: Category) -> None:
    assert verdict_move(category.value) == (Move.VERIFY, category)


def test_a_not_an_issue_verdict_rejects() -> None:
    assert verdict_move("not_an_issue") == (Move.REJECT, Category.NOT_AN_ISSUE)


def test_an_unknown_category_is_422_with_the_known_ones() -> None:
    with pytest.raises(ValidationFailed) as refused:
        verdict_move("crater")
    assert refused.value.details["allowed"] == [c.value for c in Category]
