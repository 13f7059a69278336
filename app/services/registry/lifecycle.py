"""A hazard's lifecycle: states change only through named moves, and a move the state does not allow is refused
(409 with the moves it does allow), the way OpenVINO Model Server moves a model version between its states."""

from __future__ import annotations

from enum import StrEnum

from app.services.core.errors import TransitionNotAllowed, ValidationFailed


class Status(StrEnum):
    OPEN = "open"
    VERIFIED = "verified"
    REJECTED = "rejected"
    SUSPECTED_FIXED = "suspected_fixed"
    CLOSED = "closed"


class Move(StrEnum):
    VERIFY = "verify"  # an operator confirms the hazard (any category but not_an_issue)
    REJECT = "reject"  # an operator's not_an_issue: later reports at that spot are silenced
    SUSPECT_FIXED = "suspect_fixed"  # N later passes covered the position and saw nothing
    CLOSE = "close"  # an operator closes it (repaired, or dealt with)
    REOPEN = "reopen"  # a new sighting of a hazard thought fixed or closed


class Category(StrEnum):
    """An inspector's verdict, as road authorities' pothole tracking records it."""

    POTHOLE = "pothole"
    PAVEMENT_FAILURE = "pavement_failure"
    UTILITY_CUT = "utility_cut"
    OTHER = "other"
    NOT_AN_ISSUE = "not_an_issue"


# move -> (the states it may start from, the state it leads to)
MOVES: dict[Move, tuple[frozenset[Status], Status]] = {
    Move.VERIFY: (frozenset({Status.OPEN}), Status.VERIFIED),
    Move.REJECT: (frozenset({Status.OPEN}), Status.REJECTED),
    Move.SUSPECT_FIXED: (frozenset({Status.OPEN, Status.VERIFIED}), Status.SUSPECTED_FIXED),
    Move.CLOSE: (frozenset({Status.OPEN, Status.VERIFIED, Status.SUSPECTED_FIXED}), Status.CLOSED),
    Move.REOPEN: (frozenset({Status.SUSPECTED_FIXED, Status.CLOSED}), Status.OPEN),
}


def allowed_moves(status: Status) -> list[Move]:
    """The moves `status` allows, in declaration order."""
    return [move for move, (sources, _) in MOVES.items() if status in sources]


def next_status(status: Status, move: Move) -> Status:
    """The state `move` leads to from `status`; TransitionNotAllowed (409) names the moves that are allowed."""
    sources, target = MOVES[move]
    if status not in sources:
        raise TransitionNotAllowed(
            f"A hazard that is {status.value} cannot {move.value}.",
            details={"status": status.value, "move": move.value, "allowed": [m.value for m in allowed_moves(status)]},
        )
    return target


def verdict_move(category: str) -> tuple[Move, Category]:
    """An operator's verdict as a move: not_an_issue rejects, any other category verifies."""
    try:
        parsed = Category(category)
    except ValueError:
        raise ValidationFailed(
            f"Unknown verdict category {category!r}.", details={"allowed": [c.value for c in Category]}
        ) from None
    return (Move.REJECT if parsed is Category.NOT_AN_ISSUE else Move.VERIFY), parsed
