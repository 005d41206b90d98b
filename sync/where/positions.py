"""Where a sqlglot node is in the clause text, for error locations the way Postgres reports them.

Why this module exists: sqlglot positions only some nodes (leaf tokens carry ``start``/``end`` in their
meta), while Postgres reports an error at the node's first token, at the operator token after the left
operand, or at the keyword that opens a construct; recovering those from the token list and the children's
spans is a concern of its own, kept out of the tree builder (:mod:`sync.where.parse`).
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.tokenizer_core import Token

from sync.where.syntax import TT, Parsed

__all__ = ["Positions"]


class Positions:
    """Positions of the nodes of one parsed clause (spans are cached by node identity)."""

    def __init__(self, parsed: Parsed) -> None:
        self.p = parsed
        self._spans: dict[int, tuple[int, int]] = {}

    def span(self, e: exp.Expr) -> tuple[int, int]:
        """The first and last positioned character of ``e`` and its children (cached per node)."""
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
        """Position of ``e``'s first positioned token (0 when none of it is positioned)."""
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
        """The token starting at ``pos``, if any."""
        return next((t for t in self.p.tokens if t.start == pos), None)
