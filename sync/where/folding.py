"""Constant folding as Postgres' planner does it: what it folds, what it never folds, and in what order.

Why this module exists: whether ``1/0`` in a clause is an error at compile time, an error for some rows or
never evaluated depends on Postgres' ``eval_const_expressions``: only IMMUTABLE operations on constants
fold (date/time text I/O and anything involving timestamptz are STABLE), a strict operation with a NULL
constant argument is NULL without evaluating the rest, and ``AND``/``OR``/``coalesce`` stop at a deciding
constant.  The binder (:mod:`sync.where.binder`) asks these rules while it types the tree; the parser runs
:func:`check_folding` once the tree is complete.
"""

from __future__ import annotations

from sync.where import ast as a
from sync.where.syntax import Parsed
from sync.where.typenames import TEXT_TYPES, is_array

__all__ = ["check_folding", "has_unknown", "is_stable", "strict_null"]


def check_folding(node: a.Node, parsed: Parsed) -> None:
    """Raise the error of the first failing constant that Postgres' planner would fold.

    Mirrors ``eval_const_expressions``: children are simplified in order, ``AND``/``OR`` stop at a
    constant FALSE/TRUE and ``coalesce`` at a non-NULL constant, so failures beyond those are never
    reached (and the evaluator, which short-circuits the same way, never reaches them either).
    """
    if isinstance(node, a.Failed):
        raise parsed.at(node.loc, node.message)
    if isinstance(node, a.And | a.Or):
        stop = isinstance(node, a.Or)
        for arg in node.args:
            check_folding(arg, parsed)
            if isinstance(arg, a.Const) and arg.value is stop:
                return
        return
    if isinstance(node, a.Call) and node.op == "coalesce":
        for arg in node.args:
            check_folding(arg, parsed)
            if isinstance(arg, a.Const) and arg.value is not None:
                return
        return
    for child in a.children(node):
        check_folding(child, parsed)


_STABLE_TEXT_IO = {"date", "time", "timestamp", "timestamptz", "interval"}  # their input is STABLE
_STABLE_TEXT_OUT = {"date", "timestamp", "timestamptz", "interval"}  # their output is STABLE


def is_stable(node: a.Node) -> bool:
    """Whether the node's own operation is STABLE (not IMMUTABLE) in Postgres, so never constant-folded:
    date/time text I/O, enum and array I/O, conversions involving timestamptz, timestamptz +/- interval,
    ``concat`` and ``||`` with a non-text operand."""
    if isinstance(node, a.Cast):
        src, dst = node.arg.type, node.type
        if dst in TEXT_TYPES:
            return src in _STABLE_TEXT_OUT or src.startswith("enum:") or is_array(src)
        if src in TEXT_TYPES:
            return dst in _STABLE_TEXT_IO or dst.startswith("enum:") or is_array(dst)
        return "timestamptz" in (src, dst) and src != dst
    if isinstance(node, a.Call):
        if node.op == "concat":
            return True
        if node.op == "||":
            return any(t not in TEXT_TYPES and not is_array(t) for t in node.argtypes) and not any(
                is_array(t) for t in node.argtypes
            )
        if node.op in ("+", "-") and "interval" in node.argtypes and "timestamptz" in node.argtypes:
            return True
    return False


def strict_null(node: a.Call) -> a.Node:
    """A strict operator/function with a constant NULL argument is NULL (the planner folds it without
    evaluating the other arguments, so their errors never happen)."""
    if any(isinstance(x, a.Const) and x.value is None and x.type != "unknown" for x in node.args):
        return a.Const(node.type, None)
    return node


def has_unknown(node: a.Node) -> bool:
    """Whether an untyped literal is still somewhere in ``node`` (not foldable before it gets a type)."""
    if node.type == "unknown":
        return True
    return any(has_unknown(c) for c in a.children(node))
