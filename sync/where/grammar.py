"""Where sqlglot's reading of a clause differs from Postgres' grammar, and how to read it Postgres' way.

Why this module exists: sqlglot models some operators as node types (``exp.DPipe`` for ``||``...),
associates the prefix operators ``|/`` and ``~`` more tightly than Postgres, keeps a sign apart from the
number it negates, reads ``ANY``/``SOME``/``ALL`` in several shapes and stores some function arguments in
its own order; these rules are pure tree reading, kept out of the builder (:mod:`sync.where.parse`) so it
only decides what each construct means.
"""

from __future__ import annotations

from sqlglot import exp

from sync.where.functions import ascii_lower

__all__ = [
    "BINARY_OPS",
    "COMPARISON_NODES",
    "COMPARISON_OPS",
    "any_all",
    "fold_identifier",
    "func_parts",
    "negated_number",
    "rotate_prefix",
    "show_ident",
]

BINARY_OPS: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.LT: "<",
    exp.GT: ">",
    exp.LTE: "<=",
    exp.GTE: ">=",
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.Mod: "%",
    exp.Pow: "^",
    exp.BitwiseAnd: "&",
    exp.BitwiseOr: "|",
    exp.BitwiseXor: "#",
    exp.DPipe: "||",
    exp.ArrayContainsAll: "@>",
    exp.ArrayContainedBy: "<@",
    exp.ArrayOverlaps: "&&",
}
COMPARISON_NODES = {exp.EQ, exp.NEQ, exp.LT, exp.GT, exp.LTE, exp.GTE}
COMPARISON_OPS = {"=", "<>", "<", ">", "<=", ">="}
_TIGHTER_THAN_OP = {exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Pow}


def rotate_prefix(e: exp.Expr) -> exp.Expr:
    """Re-associate a prefix operator the way Postgres' grammar does.

    ``|/`` and ``~`` are generic prefix operators in Postgres and bind more loosely than arithmetic:
    ``|/ 16 + 9`` is ``|/ (16 + 9)``, while sqlglot reads ``(|/ 16) + 9``.
    """
    left = e.this
    prefix = isinstance(left, exp.Sqrt | exp.BitwiseNot) and "start" not in (left.meta if left._meta else {})
    if type(e) not in _TIGHTER_THAN_OP or not prefix:
        return e
    inner = e.copy()
    inner.set("this", left.this.copy())
    rotated: exp.Expr = type(left)(this=rotate_prefix(inner))
    return rotated


def negated_number(e: exp.Expr) -> str | None:
    """The signed text of a numeric literal under unary minuses (Postgres folds the sign in), else None."""
    sign = ""
    while isinstance(e, exp.Neg | exp.Paren):
        if isinstance(e, exp.Neg):
            sign = "" if sign else "-"
        e = e.this
    if isinstance(e, exp.Literal) and not e.is_string:
        return sign + str(e.this)
    return None


def any_all(e: exp.Expr) -> tuple[bool, exp.Expr] | None:
    """``(is_all, array)`` when ``e`` is ``ANY(array)``/``SOME(array)``/``ALL(array)``, else None."""
    if isinstance(e, exp.Any):
        inner = e.this
        return False, inner.this if isinstance(inner, exp.Paren) else inner
    if isinstance(e, exp.All):
        inner = e.this
        return True, inner.this if isinstance(inner, exp.Paren) else inner
    if (
        isinstance(e, exp.Anonymous)
        and str(e.this).lower() in ("any", "all", "some")
        and len(e.expressions) == 1
    ):
        return str(e.this).lower() == "all", e.expressions[0]
    return None


def fold_identifier(written: str) -> str:
    """The name an identifier as written denotes: inside its quotes (``""`` for one quote) when quoted, else
    folded as Postgres folds it, ASCII ``A-Z`` only (``Äpfel`` stays ``Äpfel``; ``str.lower`` would not)."""
    return written[1:-1].replace('""', '"') if written.startswith('"') else ascii_lower(written)


def show_ident(name: str) -> str:
    """An identifier as Postgres shows it in messages: quoted unless it is a plain lower-case name."""
    if (
        name
        and (name[0].islower() or name[0] == "_")
        and all(c.islower() or c.isdigit() or c == "_" for c in name)
    ):
        return name
    return '"' + name.replace('"', '""') + '"'


def func_parts(e: exp.Func, text: str) -> tuple[str, list[exp.Expr]]:
    """The function name as written (quoted names kept, others lower-cased) and its arguments in SQL order."""
    meta = e.meta if e._meta else {}
    if "start" in meta:
        name = text[int(meta["start"]) : int(meta["end"]) + 1]
        name = fold_identifier(name)
    elif isinstance(e, exp.Anonymous):
        name = ascii_lower(str(e.this))
    else:
        name = e.sql_name().lower()
    if isinstance(e, exp.Anonymous):
        return name, list(e.expressions)
    args: list[exp.Expr] = []
    for key in e.arg_types:
        value = e.args.get(key)
        if isinstance(value, exp.Expr):
            args.append(value)
        elif isinstance(value, list):
            args.extend(v for v in value if isinstance(v, exp.Expr))
    if isinstance(e, exp.ArrayPrepend):  # sqlglot stores (array, element)
        args.reverse()
    return name, args
