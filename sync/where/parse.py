"""Validates a sqlglot expression into our typed tree (:mod:`sync.where.ast`) against a table's columns.

Types are resolved the way Postgres does for the supported operators and functions: untyped literals and
``$n`` parameters take the type their context asks for (parsed at compile time, so ``id = 'abc'`` on an
integer column is rejected here), implicit casts become explicit nodes, and sub-expressions without
column references are evaluated once (``1/0`` fails at compile time, as it does at Postgres plan time).
Error messages are Electric's (spec §8) where it has one, Postgres' otherwise, with the location of the
offending node as a byte offset in the clause.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from sqlglot import exp
from sqlglot.tokenizer_core import Token

from sync.where import ast as a
from sync.where.binder import Binder
from sync.where.errors import WhereError
from sync.where.folding import check_folding
from sync.where.literals import decode_string
from sync.where.syntax import TT, Parsed, _syntax, parse_text
from sync.where.typenames import INT_RANGES
from sync.where.values import parse_numeric

__all__ = ["build_tree"]

_BINARY: dict[type[exp.Expr], str] = {
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
        self._spans: dict[int, tuple[int, int]] = {}

    # ---- positions -------------------------------------------------------------------------------

    def span(self, e: exp.Expr) -> tuple[int, int]:
        key = id(e)
        if key not in self._spans:
            lo, hi = 1 << 30, -1
            meta = e.meta if hasattr(e, "_meta") and e._meta else {}
            if "start" in meta:
                lo, hi = int(meta["start"]), int(meta["end"])
            for child in e.iter_expressions():
                clo, chi = self.span(child)
                lo, hi = min(lo, clo), max(hi, chi)
            self._spans[key] = (lo, hi)
        return self._spans[key]

    def loc(self, e: exp.Expr) -> int:
        lo = self.span(e)[0]
        return 0 if lo == 1 << 30 else lo

    def op_loc(self, e: exp.Expr, left: exp.Expr | None) -> int:
        """Position of the operator token following ``left`` (Postgres reports operators there)."""
        if left is None:
            return self.loc(e)
        end = self.span(left)[1]
        for tok in self.p.tokens:
            if tok.start > end and tok.token_type not in (TT.R_PAREN, TT.R_BRACKET):
                return tok.start
        return self.loc(e)

    def keyword_loc(self, e: exp.Expr, kind: object) -> int:
        """Position of the last ``kind`` keyword token at or before ``e``'s first positioned token."""
        start = self.loc(e)
        found = [t.start for t in self.p.tokens if t.token_type == kind and t.start <= start]
        return found[-1] if found else start

    def token_at(self, pos: int) -> Token | None:
        return next((t for t in self.p.tokens if t.start == pos), None)

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
            number = _negated_number(e)
            if number is not None:  # Postgres folds signs into numeric constants (doNegate)
                return self.number(number)
            return b.unary("-", self.build(e.this), self.loc(e))
        if isinstance(e, exp.BitwiseNot):
            return b.unary("~", self.build(e.this), self.loc(e))
        if isinstance(e, exp.Sqrt):
            return b.unary("|/", self.build(e.this), self.loc(e))
        if isinstance(e, exp.Abs):
            return b.unary("abs", self.build(e.this), self.loc(e))
        if isinstance(e, exp.And | exp.Or):
            return b.boolean(
                type(e) is exp.And, [self.build(e.this), self.build(e.expression)], self.op_loc(e, e.this)
            )
        if isinstance(e, exp.Not):
            return b.negate(self.build(e.this), self.loc(e))
        if isinstance(e, exp.Is):
            return self.is_(e)
        if isinstance(e, exp.NullSafeEQ | exp.NullSafeNEQ):
            loc = self.op_loc(e, e.this)
            return b.distinct(
                self.build(e.this), self.build(e.expression), isinstance(e, exp.NullSafeEQ), loc
            )
        if type(e) in _BINARY:
            rotated = _rotate_prefix(e)
            return self.build(rotated) if rotated is not e else self.binary(e)
        if isinstance(e, exp.In):
            return self.in_(e)
        if isinstance(e, exp.Between):
            arg, low, high = (self.build(x) for x in (e.this, e.args["low"], e.args["high"]))
            return b.between(arg, low, high, bool(e.args.get("symmetric")), self.op_loc(e, e.this))
        if isinstance(e, exp.Like | exp.ILike):
            return b.like(
                self.build(e.this),
                self.build(e.expression),
                None,
                isinstance(e, exp.ILike),
                bool(e.args.get("negate")),
                self.op_loc(e, e.this),
            )
        if isinstance(e, exp.Escape):
            inner = e.this
            if not isinstance(inner, exp.Like | exp.ILike):
                raise self.p.at(self.loc(e), "ESCAPE is not supported in this context")
            return b.like(
                self.build(inner.this),
                self.build(inner.expression),
                self.build(e.expression),
                isinstance(inner, exp.ILike),
                bool(inner.args.get("negate")),
                self.op_loc(inner, inner.this),
            )
        if isinstance(e, exp.Cast):
            return self.cast(e)
        if isinstance(e, exp.Array):
            return b.array([self.build(x) for x in e.expressions], self.loc(e))
        if isinstance(e, exp.Bracket):
            return self.subscript(e)
        if isinstance(e, exp.AtTimeZone):
            return b.timezone(self.build(e.args["zone"]), self.build(e.this), self.op_loc(e, e.this))
        if isinstance(e, exp.Interval):
            return self.interval(e)
        if isinstance(e, exp.Exists):
            raise self.p.at(self.keyword_loc(e, TT.EXISTS), _SUBLINK)
        if isinstance(e, exp.Subquery | exp.Select):
            raise self.p.at(self.loc(e), _SUBLINK)
        if isinstance(e, exp.Dot) and isinstance(e.expression, exp.Func):
            schema = e.this.name if isinstance(e.this, exp.Identifier | exp.Column) else ""
            if schema.lower() != "pg_catalog":
                raise self.p.at(self.loc(e), f"unknown or unsupported function {schema}.{e.expression.name}")
            return self.function(e.expression)
        if isinstance(e, exp.Collate):
            coll = e.expression
            name = coll.this if isinstance(coll, exp.Identifier) else coll.name
            if name != "C":  # our text semantics are the C collation's, which the generated SQL pins
                raise self.p.at(
                    self.op_loc(e, e.this), f'collations other than "C" are not supported: {name}'
                )
            return self.build(e.this)
        if isinstance(e, exp.Case):
            raise self.p.at(self.keyword_loc(e, TT.CASE), "CaseExpr is not supported in this context")
        if (
            isinstance(e, exp.Func)
            and "start" not in (e.meta if e._meta else {})
            and isinstance(e.args.get("expression"), exp.Expr)
        ):  # an operator sqlglot models as a function (~, ->>, SIMILAR TO...)
            loc = self.op_loc(e, e.this)
            tok = self.token_at(loc)
            name = self.p.text[tok.start : tok.end + 1] if tok is not None else type(e).__name__
            raise self.p.at(loc, f"unknown binary operator {name}")
        if isinstance(e, exp.Func):
            return self.function(e)
        if isinstance(e, exp.Binary):
            loc = self.op_loc(e, e.this)
            tok = self.token_at(loc)
            name = self.p.text[tok.start : tok.end + 1] if tok is not None else type(e).__name__
            raise self.p.at(loc, f"unknown binary operator {name}")
        name = _PG_NODE_NAMES.get(type(e), type(e).__name__)
        raise self.p.at(self.loc(e), f"{name} is not supported in this context")

    def column(self, e: exp.Column) -> a.Node:
        ident = e.this
        parts = [p for p in (e.args.get("catalog"), e.args.get("db"), e.args.get("table")) if p is not None]
        name = ident.this if ident.quoted else str(ident.this).lower()
        shown = ".".join(_show_ident(p.this if p.quoted else str(p.this).lower()) for p in [*parts, ident])
        if parts or name not in self.columns:
            raise self.p.at(self.loc(e), f"unknown reference {shown}")
        return a.Col(name, self.columns[name])

    def literal(self, e: exp.Expr) -> a.Node:
        start = self.loc(e)
        tok = self.token_at(start)
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
        loc = self.loc(e) - 1 if self.loc(e) > 0 else 0
        raw = e.this.this if isinstance(e.this, exp.Literal) else None
        if raw is None or not str(raw).isdigit():
            raise _syntax_at(self.p, e, self)
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
        loc = self.op_loc(e, e.this)
        unknown_kw = any(t.token_type == TT.UNKNOWN and t.start > self.span(e.this)[1] for t in self.p.tokens)
        if isinstance(target, exp.Null) and not unknown_kw:
            return b.is_null(arg, negated)
        if isinstance(target, exp.Null):
            return b.is_null(b.coerce(arg, "bool", loc, what="IS UNKNOWN"), negated)
        if isinstance(target, exp.Boolean):
            return b.bool_test(arg, bool(target.this), negated, loc)
        raise self.p.at(loc, "IS is not supported in this context")

    def binary(self, e: exp.Expr) -> a.Node:
        op = _BINARY[type(e)]
        loc = self.op_loc(e, e.this)
        tok = self.token_at(loc)
        if tok is not None and tok.token_type == TT.EQ and self.p.text[tok.start : tok.end + 1] == "==":
            raise self.p.at(loc, "unknown binary operator ==")
        if op in _COMPARISON_OPS and (type(e.this) in _COMPARISONS or type(e.expression) in _COMPARISONS):
            # comparison operators do not associate in Postgres' grammar: ``a < b = c`` is invalid
            raise _syntax(self.p.text, loc, self.p.text[tok.start : tok.end + 1] if tok else op)
        right = e.expression
        quantified = _any_all(right) if op in ("=", "<>", "<", ">", "<=", ">=") else None
        if quantified is not None:
            is_all, arr = quantified
            return self.binder.any_all(op, self.build(e.this), self.build(arr), is_all, loc)
        return self.binder.binary(op, self.build(e.this), self.build(right), loc)

    def in_(self, e: exp.In) -> a.Node:
        if e.args.get("query") is not None:
            raise self.p.at(self.op_loc(e, e.this), _SUBLINK)
        if isinstance(e.this, exp.Tuple):
            raise self.p.at(self.loc(e), "RowExpr is not supported in this context")
        return self.binder.in_list(
            self.build(e.this), [self.build(x) for x in e.expressions], self.op_loc(e, e.this)
        )

    def cast(self, e: exp.Cast) -> a.Node:
        to = e.args["to"]
        loc = self.op_loc(e, e.this) if self.loc(e.this) <= self.loc(e) else self.loc(e)
        target, length = self.binder.type_from_sql(to, self.loc(to) or loc)
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
        return self.binder.subscript(self.build(cur), lowers, uppers, is_slice, self.loc(e))

    def index(self, s: exp.Expr) -> a.Node:
        return self.build(s)

    def interval(self, e: exp.Interval) -> a.Node:
        this = e.this
        unit = e.args.get("unit")
        text = str(this.this) if isinstance(this, exp.Literal) else None
        if text is None:
            raise self.p.at(self.loc(e), "INTERVAL is not supported in this context")
        tok = self.token_at(self.loc(this))
        if tok is not None and tok.token_type in (TT.STRING, TT.BYTE_STRING, TT.HEREDOC_STRING):
            text = decode_string(self.p.text, tok)
            unit_tok = next((t for t in self.p.tokens if t.start > tok.end), None)
            if unit is not None and unit_tok is not None:
                text = f"{text} {unit.name}"
        elif unit is not None:
            text = f"{text} {unit.name}"
        return self.binder.cast(a.Const("unknown", text), "interval", None, self.loc(e))

    def function(self, e: exp.Func) -> a.Node:
        name, args = self.func_parts(e)
        loc = self.loc(e)
        if isinstance(e, _AGGREGATES) and (
            any(isinstance(x, exp.Star) for x in args) or e.args.get("distinct")
        ):
            raise self.p.at(loc, "aggregation is not supported in this context")
        built = [self.build(x) for x in args]
        if name in ("any", "all", "some"):
            raise self.p.at(loc, f"unknown or unsupported function {name}/{len(args)}")
        return self.binder.function(name, built, loc)

    def func_parts(self, e: exp.Func) -> tuple[str, list[exp.Expr]]:
        meta = e.meta if e._meta else {}
        if "start" in meta:
            name = self.p.text[int(meta["start"]) : int(meta["end"]) + 1]
            name = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
        elif isinstance(e, exp.Anonymous):
            name = str(e.this).lower()
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


_COMPARISONS = {exp.EQ, exp.NEQ, exp.LT, exp.GT, exp.LTE, exp.GTE}
_COMPARISON_OPS = {"=", "<>", "<", ">", "<=", ">="}
_TIGHTER_THAN_OP = {exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Pow}


def _rotate_prefix(e: exp.Expr) -> exp.Expr:
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
    rotated: exp.Expr = type(left)(this=_rotate_prefix(inner))
    return rotated


def _negated_number(e: exp.Expr) -> str | None:
    sign = ""
    while isinstance(e, exp.Neg | exp.Paren):
        if isinstance(e, exp.Neg):
            sign = "" if sign else "-"
        e = e.this
    if isinstance(e, exp.Literal) and not e.is_string:
        return sign + str(e.this)
    return None


def _any_all(e: exp.Expr) -> tuple[bool, exp.Expr] | None:
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


def _show_ident(name: str) -> str:
    if (
        name
        and (name[0].islower() or name[0] == "_")
        and all(c.islower() or c.isdigit() or c == "_" for c in name)
    ):
        return name
    return '"' + name.replace('"', '""') + '"'


def _syntax_at(p: Parsed, e: exp.Expr, b: _Builder) -> WhereError:
    pos = b.loc(e)
    tok = b.token_at(pos)
    return _syntax(p.text, pos, p.text[tok.start : tok.end + 1] if tok is not None else None)
