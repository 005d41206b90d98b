"""Our typed expression tree: the only form a WHERE clause takes after validation.

Every node carries its Postgres result type (see :mod:`sync.where.typenames` for type names).  Operator and
function nodes name the operation and the operand types it was resolved for, so the evaluator and the SQL
generator never re-resolve anything.  Implicit casts are explicit :class:`Cast` nodes.  Constants hold
Python values (already parsed); ``param`` remembers the ``$n`` a constant came from, and does not take part
in equality (a clause and its regenerated SQL parse to equal trees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "And",
    "AnyAll",
    "ArrayCtor",
    "BoolTest",
    "Call",
    "Cast",
    "Col",
    "Const",
    "Distinct",
    "Failed",
    "InList",
    "IsNull",
    "Like",
    "Node",
    "Not",
    "Or",
    "Subscript",
    "columns_of",
]


@dataclass(frozen=True, slots=True)
class Const:
    type: str
    value: Any
    param: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Call:
    """An operator or function; ``op`` is its SQL name (``+``, ``=``, ``lower``, ``neg``...)."""

    op: str
    args: tuple[Node, ...]
    type: str
    argtypes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Cast:
    arg: Node
    type: str
    length: int | None = None  # varchar(n) / bpchar(n) length of an explicit cast


@dataclass(frozen=True, slots=True)
class And:
    args: tuple[Node, ...]
    type: str = "bool"


@dataclass(frozen=True, slots=True)
class Or:
    args: tuple[Node, ...]
    type: str = "bool"


@dataclass(frozen=True, slots=True)
class Not:
    arg: Node
    type: str = "bool"


@dataclass(frozen=True, slots=True)
class IsNull:
    arg: Node
    negated: bool
    type: str = "bool"


@dataclass(frozen=True, slots=True)
class BoolTest:
    """``IS [NOT] TRUE`` / ``IS [NOT] FALSE``."""

    arg: Node
    value: bool
    negated: bool
    type: str = "bool"


@dataclass(frozen=True, slots=True)
class Distinct:
    """``a IS [NOT] DISTINCT FROM b``; both sides already share ``cmp_type``."""

    left: Node
    right: Node
    cmp_type: str
    negated: bool
    type: str = "bool"


@dataclass(frozen=True, slots=True)
class InList:
    arg: Node
    items: tuple[Node, ...]
    cmp_type: str
    negated: bool
    type: str = "bool"


@dataclass(frozen=True, slots=True)
class AnyAll:
    """``left op ANY|ALL (array)``; ``cmp`` is the resolved comparison ``Call`` template types."""

    op: str
    left: Node
    array: Node
    cmp_type: str
    all: bool
    type: str = "bool"


@dataclass(frozen=True, slots=True)
class Like:
    arg: Node
    pattern: Node
    escape: Node | None
    case_insensitive: bool
    negated: bool
    type: str = "bool"


@dataclass(frozen=True, slots=True)
class ArrayCtor:
    items: tuple[Node, ...]
    type: str


@dataclass(frozen=True, slots=True)
class Subscript:
    """``a[i][j]...`` (``is_slice`` False: ``lowers`` are all None) or ``a[lo:hi]...`` (bounds may be
    omitted; when any subscript is a slice, a plain ``[i]`` means ``[1:i]``, as in Postgres)."""

    arg: Node
    lowers: tuple[Node | None, ...]
    uppers: tuple[Node | None, ...]
    is_slice: bool
    type: str


@dataclass(frozen=True, slots=True)
class Failed:
    """A column-free sub-expression whose evaluation fails (``1/0``).  Postgres raises when its planner
    folds it, unless folding never reaches it (``OR`` after a constant TRUE, ``AND`` after a constant
    FALSE, ``coalesce`` after a non-NULL constant); see :func:`sync.where.folding.check_folding`."""

    node: Node
    message: str
    loc: int = field(compare=False, repr=False)  # where the user wrote it (not part of the tree's identity)
    type: str


Node = (
    Failed
    | Const
    | Col
    | Call
    | Cast
    | And
    | Or
    | Not
    | IsNull
    | BoolTest
    | Distinct
    | InList
    | AnyAll
    | Like
    | ArrayCtor
    | Subscript
)


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Const | Col):
        return ()
    if isinstance(node, Failed):
        return (node.node,)
    if isinstance(node, Call | And | Or | ArrayCtor):
        return node.args if not isinstance(node, ArrayCtor) else node.items
    if isinstance(node, Cast | Not | IsNull | BoolTest):
        return (node.arg,)
    if isinstance(node, Distinct):
        return (node.left, node.right)
    if isinstance(node, InList):
        return (node.arg, *node.items)
    if isinstance(node, AnyAll):
        return (node.left, node.array)
    if isinstance(node, Like):
        return (node.arg, node.pattern) + ((node.escape,) if node.escape is not None else ())
    return tuple(n for n in (node.arg, *node.lowers, *node.uppers) if n is not None)


def columns_of(node: Node) -> frozenset[str]:
    if isinstance(node, Col):
        return frozenset((node.name,))
    out: frozenset[str] = frozenset()
    for child in children(node):
        out |= columns_of(child)
    return out
