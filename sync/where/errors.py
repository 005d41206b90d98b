"""The two ways a WHERE clause fails: rejected when compiled, or failing on a particular row."""

from __future__ import annotations

__all__ = ["WhereError", "WhereEvalError", "evaluation_fault"]


class WhereError(ValueError):
    """The clause is not accepted.  ``messages`` are the exact strings the HTTP layer puts in
    ``{"message": "Invalid request", "errors": {"where": messages}}`` (spec §2, §8)."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


class WhereEvalError(ArithmeticError):
    """Evaluating the clause on a row failed where Postgres raises an ERROR (integer overflow, division
    by zero, invalid input for a cast...).  ``message`` is Postgres' own message text.

    The evaluator never swallows it: Postgres would fail the snapshot query for the same row, so the
    caller decides (the shape consumer should treat it as "this shape can no longer be maintained").
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def evaluation_fault(exc: Exception) -> WhereEvalError:
    """The WhereEvalError for an exception that is a fault of the evaluator itself, not a row Postgres would
    refuse: raised in its place so that it costs the shape whose clause met it, never the router that every
    shape depends on (the caller logs it)."""
    return WhereEvalError(f"the WHERE clause could not be evaluated ({type(exc).__name__})")
