"""Validates a sqlglot expression into our typed tree (:mod:`sync.where.ast`) against a table's columns.

Types are resolved the way Postgres does for the supported operators and functions: untyped literals and
``$n`` parameters take the type their context asks for (parsed at compile time, so ``id = 'abc'`` on an
integer column is rejected here), implicit casts become explicit nodes, and sub-expressions without
column references are evaluated once (``1/0`` fails at compile time, as it does at Postgres plan time).
Error messages are Electric's (spec §8) where it has one, Postgres' otherwise, with the location of the
offending node as a byte offset in the clause.  Reading sqlglot's tree Postgres' way is in
:mod:`sync.where.grammar`, node positions in :mod:`sync.where.positions`, typing in :mod:`sync.where.binder`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from sqlglot import exp

from sync.where import ast as a
from sync.where.binder import Binder
from sync.where.errors import WhereError
from sync.where.folding import check_folding
from sync.where.functions import ascii_lower
from sync.where.grammar import (
    BINARY_OPS,
    COMPARISON_NODES,
    COMPARISON_OPS,
    any_all,
    func_parts,
    negated_number,
    rotate_prefix,
    show_ident,
)
from sync.where.literals import decode_string
from sync.where.positions import Positions
from sync.where.syntax import TT, Parsed, parse_text, syntax_error
from sync.where.typenames import INT_RANGES
from sync.where.values import parse_numeric

__all__ = ["build_tree", "referenced_columns", "remember_columns"]

_AGGREGATES = (exp.AggFunc, exp.Window)
_SUBLINK = "only `value IN (SELECT ...)` sublinks are supported right now"
_PG_NODE_NAMES = {
    exp.Case: "CaseExpr",
    exp.If: "CaseExpr",
    exp.Tuple: "RowExpr",
    exp.Collate: "CollateClause",
}


def build_tree(
    text: str,
    columns: Mapping[str, str],
    enums: dict[str, tuple[str, ...]],
    params: Mapping[int, str],
) -> tuple[a.Node, dict[int, str]]:
    """Parse and validate ``text``; return the boolean tree and the types of the parameters used."""
    parsed = parse_text(text)
    builder = _Builder(parsed, columns, enums, params)
    node = builder.build(parsed.tree)
    node = builder.binder.coerce(node, "bool", 0, top=True)
    check_folding(node, parsed)
    unused = sorted(set(params) - set(builder.binder.param_types))
    if unused:
        raise WhereError([f"parameter value for ${unused[0]} was not used"])
    return node, dict(builder.binder.param_types)


class _Builder:
    def __init__(
        self,
        parsed: Parsed,
        columns: Mapping[str, str],
        enums: dict[str, tuple[str, ...]],
        params: Mapping[int, str],
    ) -> None:
        self.p = parsed
        self.columns = columns
        self.params = params
        self.binder = Binder(parsed, enums)
        self.pos = Positions(parsed)

    # ---- building ---------------------------------------------------------------------------------

    def build(self, e: exp.Expr) -> a.Node:
        b = self.binder
        if isinstance(e, exp.Paren):
            return self.build(e.this)
        if isinstance(e, exp.Column):
            return self.column(e)
        if isinstance(
            e,
            exp.Literal | exp.ByteString | exp.HexString | exp.BitString | exp.RawString | exp.UnicodeString,
        ):
            return self.literal(e)
        if isinstance(e, exp.Boolean):
            return a.Const("bool", bool(e.this))
        if isinstance(e, exp.Null):
            return a.Const("unknown", None)
        if isinstance(e, exp.Parameter | exp.Placeholder):
            return self.param(e)
        if isinstance(e, exp.Neg):
            number = negated_number(e)
            if number is not None:  # Postgres folds signs into numeric constants (doNegate)
                return self.number(number)
            return b.unary("-", self.build(e.this), self.pos.loc(e))
        if isinstance(e, exp.BitwiseNot):
            return b.unary("~", self.build(e.this), self.pos.loc(e))
        if isinstance(e, exp.Sqrt):
            return b.unary("|/", self.build(e.this), self.pos.loc(e))
        if isinstance(e, exp.Abs):
            return b.unary("abs", self.build(e.this), self.pos.loc(e))
        if isinstance(e, exp.And | exp.Or):
            return b.boolean(
                type(e) is exp.And, [self.build(e.this), self.build(e.expression)], self.pos.op_loc(e, e.this)
            )
        if isinstance(e, exp.Not):
            return b.negate(self.build(e.this), self.pos.loc(e))
        if isinstance(e, exp.Is):
            return self.is_(e)
        if isinstance(e, exp.NullSafeEQ | exp.NullSafeNEQ):
            loc = self.pos.op_loc(e, e.this)
            return b.distinct(
                self.build(e.this), self.build(e.expression), isinstance(e, exp.NullSafeEQ), loc
            )
        if type(e) in BINARY_OPS:
            rotated = rotate_prefix(e)
            return self.build(rotated) if rotated is not e else self.binary(e)
        if isinstance(e, exp.In):
            return self.in_(e)
        if isinstance(e, exp.Between):
            arg, low, high = (self.build(x) for x in (e.this, e.args["low"], e.args["high"]))
            return b.between(arg, low, high, bool(e.args.get("symmetric")), self.pos.op_loc(e, e.this))
        if isinstance(e, exp.Like | exp.ILike):
            return b.like(
                self.build(e.this),
                self.build(e.expression),
                None,
                isinstance(e, exp.ILike),
                bool(e.args.get("negate")),
                self.pos.op_loc(e, e.this),
            )
        if isinstance(e, exp.Escape):
            inner = e.this
            if not isinstance(inner, exp.Like | exp.ILike):
                raise self.p.at(self.pos.loc(e), "ESCAPE is not supported in this context")
            return b.like(
                self.build(inner.this),
                self.build(inner.expression),
                self.build(e.expression),
                isinstance(inner, exp.ILike),
                bool(inner.args.get("negate")),
                self.pos.op_loc(inner, inner.this),
            )
        if isinstance(e, exp.Cast):
            return self.cast(e)
        if isinstance(e, exp.Array):
            return b.array([self.build(x) for x in e.expressions], self.pos.loc(e))
        if isinstance(e, exp.Bracket):
            return self.subscript(e)
        if isinstance(e, exp.AtTimeZone):
            return b.timezone(self.build(e.args["zone"]), self.build(e.this), self.pos.op_loc(e, e.this))
        if isinstance(e, exp.Interval):
            return self.interval(e)
        if isinstance(e, exp.Exists):
            raise self.p.at(self.pos.keyword_loc(e, TT.EXISTS), _SUBLINK)
        if isinstance(e, exp.Subquery | exp.Select):
            raise self.p.at(self.pos.loc(e), _SUBLINK)
        if isinstance(e, exp.Dot) and isinstance(e.expression, exp.Func):
            schema = e.this.name if isinstance(e.this, exp.Identifier | exp.Column) else ""
            if schema.lower() != "pg_catalog":
                raise self.p.at(
                    self.pos.loc(e), f"unknown or unsupported function {schema}.{e.expression.name}"
                )
            return self.function(e.expression)
        if isinstance(e, exp.Collate):
            coll = e.expression
            name = coll.this if isinstance(coll, exp.Identifier) else coll.name
            if name != "C":  # our text semantics are the C collation's, which the generated SQL pins
                raise self.p.at(
                    self.pos.op_loc(e, e.this), f'collations other than "C" are not supported: {name}'
                )
            return self.build(e.this)
        if isinstance(e, exp.Case):
            raise self.p.at(self.pos.keyword_loc(e, TT.CASE), "CaseExpr is not supported in this context")
        if (
            isinstance(e, exp.Func)
            and "start" not in (e.meta if e._meta else {})
            and isinstance(e.args.get("expression"), exp.Expr)
        ):  # an operator sqlglot models as a function (~, ->>, SIMILAR TO...)
            loc = self.pos.op_loc(e, e.this)
            tok = self.pos.token_at(loc)
            name = self.p.text[tok.start : tok.end + 1] if tok is not None else type(e).__name__
            raise self.p.at(loc, f"unknown binary operator {name}")
        if isinstance(e, exp.Func):
            return self.function(e)
        if isinstance(e, exp.Binary):
            loc = self.pos.op_loc(e, e.this)
            tok = self.pos.token_at(loc)
            name = self.p.text[tok.start : tok.end + 1] if tok is not None else type(e).__name__
            raise self.p.at(loc, f"unknown binary operator {name}")
        name = _PG_NODE_NAMES.get(type(e), type(e).__name__)
        raise self.p.at(self.pos.loc(e), f"{name} is not supported in this context")

    def column(self, e: exp.Column) -> a.Node:
        ident = e.this
        parts = [p for p in (e.args.get("catalog"), e.args.get("db"), e.args.get("table")) if p is not None]
        name = _column_name(e)
        shown = ".".join(show_ident(_folded(p)) for p in [*parts, ident])
        if parts or name not in self.columns:
            raise self.p.at(self.pos.loc(e), f"unknown reference {shown}")
        return a.Col(name, self.columns[name])

    def literal(self, e: exp.Expr) -> a.Node:
        start = self.pos.loc(e)
        tok = self.pos.token_at(start)
        if isinstance(e, exp.HexString | exp.BitString) or (
            tok is not None and tok.token_type in (TT.HEX_STRING, TT.BIT_STRING)
        ):
            raise self.p.at(start, "BitString values are not supported")
        if isinstance(e, exp.Literal) and not e.is_string:
            return self.number(str(e.this))
        value = decode_string(self.p.text, tok) if tok is not None else str(e.this)
        if "\x00" in value:
            raise self.p.at(start, 'invalid byte sequence for encoding "UTF8": 0x00')
        return a.Const("unknown", value)

    def number(self, text: str) -> a.Node:
        if text.lstrip("-").isdigit():
            v = int(text)
            for t in ("int4", "int8"):
                lo, hi = INT_RANGES[t]
                if lo <= v <= hi:
                    return a.Const(t, v)
            return a.Const("numeric", Decimal(v))
        return a.Const("numeric", parse_numeric(text))

    def param(self, e: exp.Expr) -> a.Node:
        loc = self.pos.loc(e) - 1 if self.pos.loc(e) > 0 else 0
        raw = e.this.this if isinstance(e.this, exp.Literal) else None
        if raw is None or not str(raw).isdigit():
            raise _syntax_at(self.p, e, self.pos)
        n = int(str(raw))
        if n not in self.params:
            raise self.p.at(loc, f"parameter ${n} was not provided")
        if "\x00" in self.params[n]:
            raise self.p.at(loc, 'invalid byte sequence for encoding "UTF8": 0x00')
        return self.binder.param(n, self.params[n])

    def is_(self, e: exp.Is) -> a.Node:
        b = self.binder
        target = e.expression
        negated = bool(e.args.get("negate"))
        arg = self.build(e.this)
        loc = self.pos.op_loc(e, e.this)
        unknown_kw = any(
            t.token_type == TT.UNKNOWN and t.start > self.pos.span(e.this)[1] for t in self.p.tokens
        )
        if isinstance(target, exp.Null) and not unknown_kw:
            return b.is_null(arg, negated)
        if isinstance(target, exp.Null):
            return b.is_null(b.coerce(arg, "bool", loc, what="IS UNKNOWN"), negated)
        if isinstance(target, exp.Boolean):
            return b.bool_test(arg, bool(target.this), negated, loc)
        raise self.p.at(loc, "IS is not supported in this context")

    def binary(self, e: exp.Expr) -> a.Node:
        op = BINARY_OPS[type(e)]
        loc = self.pos.op_loc(e, e.this)
        tok = self.pos.token_at(loc)
        if tok is not None and tok.token_type == TT.EQ and self.p.text[tok.start : tok.end + 1] == "==":
            raise self.p.at(loc, "unknown binary operator ==")
        if op in COMPARISON_OPS and (
            type(e.this) in COMPARISON_NODES or type(e.expression) in COMPARISON_NODES
        ):
            # comparison operators do not associate in Postgres' grammar: ``a < b = c`` is invalid
            raise syntax_error(self.p.text, loc, self.p.text[tok.start : tok.end + 1] if tok else op)
        right = e.expression
        quantified = any_all(right) if op in ("=", "<>", "<", ">", "<=", ">=") else None
        if quantified is not None:
            is_all, arr = quantified
            return self.binder.any_all(op, self.build(e.this), self.build(arr), is_all, loc)
        return self.binder.binary(op, self.build(e.this), self.build(right), loc)

    def in_(self, e: exp.In) -> a.Node:
        if e.args.get("query") is not None:
            raise self.p.at(self.pos.op_loc(e, e.this), _SUBLINK)
        if isinstance(e.this, exp.Tuple):
            raise self.p.at(self.pos.loc(e), "RowExpr is not supported in this context")
        return self.binder.in_list(
            self.build(e.this), [self.build(x) for x in e.expressions], self.pos.op_loc(e, e.this)
        )

    def cast(self, e: exp.Cast) -> a.Node:
        to = e.args["to"]
        loc = self.pos.op_loc(e, e.this) if self.pos.loc(e.this) <= self.pos.loc(e) else self.pos.loc(e)
        target, length = self.binder.type_from_sql(to, self.pos.loc(to) or loc)
        inner = e.this
        if isinstance(inner, exp.Array) and not inner.expressions:
            if not target.endswith("[]"):
                raise self.p.at(loc, f"cannot cast type unknown[] to {target}")
            return a.Const(target, ())
        return self.binder.cast(self.build(inner), target, length, loc)

    def subscript(self, e: exp.Bracket) -> a.Node:
        subs: list[exp.Expr] = []
        cur: exp.Expr = e
        while isinstance(cur, exp.Bracket):
            subs = list(cur.expressions) + subs
            cur = cur.this
        lowers: list[a.Node | None] = []
        uppers: list[a.Node | None] = []
        is_slice = any(isinstance(s, exp.Slice) for s in subs)
        for s in subs:
            if isinstance(s, exp.Slice):
                lowers.append(self.index(s.this) if s.this is not None else None)
                uppers.append(self.index(s.expression) if s.expression is not None else None)
            else:
                lowers.append(None)
                uppers.append(self.index(s))
        return self.binder.subscript(self.build(cur), lowers, uppers, is_slice, self.pos.loc(e))

    def index(self, s: exp.Expr) -> a.Node:
        return self.build(s)

    def interval(self, e: exp.Interval) -> a.Node:
        this = e.this
        unit = e.args.get("unit")
        text = str(this.this) if isinstance(this, exp.Literal) else None
        if text is None:
            raise self.p.at(self.pos.loc(e), "INTERVAL is not supported in this context")
        tok = self.pos.token_at(self.pos.loc(this))
        if tok is not None and tok.token_type in (TT.STRING, TT.BYTE_STRING, TT.HEREDOC_STRING):
            text = decode_string(self.p.text, tok)
            unit_tok = next((t for t in self.p.tokens if t.start > tok.end), None)
            if unit is not None and unit_tok is not None:
                text = f"{text} {unit.name}"
        elif unit is not None:
            text = f"{text} {unit.name}"
        return self.binder.cast(a.Const("unknown", text), "interval", None, self.pos.loc(e))

    def function(self, e: exp.Func) -> a.Node:
        name, args = func_parts(e, self.p.text)
        loc = self.pos.loc(e)
        if isinstance(e, _AGGREGATES) and (
            any(isinstance(x, exp.Star) for x in args) or e.args.get("distinct")
        ):
            raise self.p.at(loc, "aggregation is not supported in this context")
        built = [self.build(x) for x in args]
        if name in ("any", "all", "some"):
            raise self.p.at(loc, f"unknown or unsupported function {name}/{len(args)}")
        return self.binder.function(name, built, loc)


def _syntax_at(p: Parsed, e: exp.Expr, positions: Positions) -> WhereError:
    pos = positions.loc(e)
    tok = positions.token_at(pos)
    return syntax_error(p.text, pos, p.text[tok.start : tok.end + 1] if tok is not None else None)


def _folded(ident: exp.Identifier) -> str:
    """The name a parsed identifier denotes: as written when quoted, folded otherwise as Postgres folds it
    (ASCII ``A-Z`` only: ``Äpfel`` names ``Äpfel``, which ``str.lower`` would have made ``äpfel``)."""
    return str(ident.this) if ident.quoted else ascii_lower(str(ident.this))


def _column_name(e: exp.Column) -> str:
    """The column a reference names."""
    return _folded(e.this)


_REFERENCED: dict[str, frozenset[str]] = {}  # clause text -> the columns it reads
_REFERENCED_MAX_CHARS = 8_000_000  # of clause text kept: a cache, forgotten all at once when full
_referenced_chars = 0


def referenced_columns(text: str) -> frozenset[str]:
    """The column names an accepted clause's text reads: what its compilation found
    (:func:`remember_columns`), or else what its syntax refers to (parsed here, no catalog needed).

    What the schema checks need of a stored shape's WHERE: a column it reads that is dropped, renamed or
    retyped invalidates the shape as a selected one does.  Compiling a shape's clause records its columns,
    so the checks over thousands of shapes (``id = k``, each its own text) parse none of them again.
    Raises :class:`WhereError` for text that does not parse (never the case for a stored, accepted clause)."""
    found = _REFERENCED.get(text)
    if found is None:
        found = frozenset(_column_name(c) for c in parse_text(text).tree.find_all(exp.Column))
        remember_columns(text, found)
    return found


def remember_columns(text: str, columns: frozenset[str]) -> None:
    """Record the columns the compiled clause ``text`` reads (bounded by the text kept, so that clauses of
    any length from any number of clients cannot grow it without end)."""
    global _referenced_chars
    if text in _REFERENCED:
        return
    if _referenced_chars + len(text) > _REFERENCED_MAX_CHARS:
        _REFERENCED.clear()
        _referenced_chars = 0
    _REFERENCED[text] = columns
    _referenced_chars += len(text)
