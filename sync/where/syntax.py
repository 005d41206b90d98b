"""Turns WHERE text into one sqlglot expression, rejecting what Postgres would not parse.

sqlglot is lenient (python-stack.md §6): it accepts ``x == 1``, ``x IN ()``, a bare ``SELECT``, several
statements, and mistranslates a few operators.  Before and after parsing we check the token stream the
way Postgres' grammar would, and report syntax errors as Electric does: ``At location N: syntax error at
or near "tok"`` where N is the byte offset in ``SELECT 1 WHERE <where>`` (libpg_query's cursor).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import Token, TokenType

from sync.where.errors import WhereError

PREFIX = "SELECT 1 WHERE "
# Bounds on what a clause may nest, checked on the tokens before sqlglot parses them.  sqlglot's parser, our
# tree builder and the compiled predicate all recurse once per level (a chain ``a OR b OR c`` nests one
# level per operator), so without them a long or deep clause ends in a RecursionError: in a request a 500,
# in an actor (the collector evaluates clauses) a crash.  Within them a compiled clause evaluates from any
# caller's stack depth; parsing the most nested forms (hundreds of NOTs) can still run out, which
# ``clause.compile_for_columns`` turns into a 400 (tests/where/test_limits.py).
MAX_NESTING = 32  # parentheses and brackets
MAX_OPERATORS = 400  # tokens other than operands, commas and brackets: operators and keywords


class _Dialect(Postgres):
    """Postgres, minus sqlglot's rewriting of subscripts to 0-based (``a[1]`` must stay ``a[1]``)."""

    INDEX_OFFSET = 0


_DIALECT = _Dialect()
TT = TokenType

_LITERALS = {TT.NUMBER, TT.STRING, TT.BYTE_STRING, TT.HEREDOC_STRING, TT.UNICODE_STRING, TT.NATIONAL_STRING}
_OPERAND_END = _LITERALS | {TT.IDENTIFIER, TT.VAR, TT.R_PAREN, TT.R_BRACKET, TT.NULL, TT.TRUE, TT.FALSE}
_OPERAND_START = _LITERALS | {TT.IDENTIFIER, TT.VAR}
_NOT_OPERATORS = _LITERALS | {
    TT.IDENTIFIER,
    TT.VAR,
    TT.COMMA,
    TT.L_PAREN,
    TT.R_PAREN,
    TT.L_BRACKET,
    TT.R_BRACKET,
    TT.NULL,
    TT.TRUE,
    TT.FALSE,
    TT.PARAMETER,
    TT.PLACEHOLDER,
}
_KEYWORD_VARS = {"AT", "ZONE", "SYMMETRIC", "ASYMMETRIC", "VARIADIC", "SOME", "PRECISION", "VARYING"}
_CLAUSES = {
    TT.FROM,
    TT.GROUP_BY,
    TT.ORDER_BY,
    TT.LIMIT,
    TT.OFFSET,
    TT.HAVING,
    TT.WINDOW,
    TT.UNION,
    TT.INTERSECT,
    TT.EXCEPT,
    TT.FETCH,
    TT.QUALIFY,
}


@dataclass(frozen=True, slots=True)
class Parsed:
    text: str
    tree: exp.Expr
    tokens: list[Token]

    def byte_offset(self, char_pos: int) -> int:
        return len(self.text[:char_pos].encode())

    def at(self, char_pos: int, message: str) -> WhereError:
        """A semantic error at ``char_pos`` of the clause (location = byte offset in the clause)."""
        return WhereError([f"At location {self.byte_offset(char_pos)}: {message}"])


def syntax_error(text: str, char_pos: int, near: str | None) -> WhereError:
    """Electric's syntax error at ``char_pos`` of ``text``, near token ``near`` (None: at end of input)."""
    loc = len(PREFIX.encode()) + len(text[:char_pos].encode())
    if near is None:
        return WhereError([f"At location {loc}: syntax error at end of input"])
    return WhereError([f'At location {loc}: syntax error at or near "{near}"'])


def _raw(text: str, tok: Token) -> str:
    return text[tok.start : tok.end + 1]


def _unterminated(text: str) -> WhereError:
    """Locate what the tokenizer could not close, with Postgres' lexer messages."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if ch == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                return _lex_error(text, i, "unterminated /* comment")
            i = j + 2
            continue
        if ch in "'\"":
            j = i + 1
            while j < n:
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:
                        j += 2
                        continue
                    break
                if text[j] == "\\" and ch == "'" and i > 0 and text[i - 1] in "eE":
                    j += 2
                    continue
                j += 1
            if j >= n:
                what = "quoted string" if ch == "'" else "quoted identifier"
                return _lex_error(
                    text,
                    i - (1 if ch == "'" and i > 0 and text[i - 1] in "eE" else 0),
                    f"unterminated {what}",
                )
            i = j + 1
            continue
        if ch == "$" and i + 1 < n and (text[i + 1] == "$" or text[i + 1].isalpha()):
            j = text.find("$", i + 1)
            if (j > 0 and text[i + 1 : j].replace("_", "a").isalnum()) or j == i + 1:
                tag = text[i : j + 1]
                k = text.find(tag, j + 1)
                if k < 0:
                    return _lex_error(text, i, "unterminated dollar-quoted string")
                i = k + len(tag)
                continue
        i += 1
    return syntax_error(text, 0, text[:1] or None)


def _lex_error(text: str, pos: int, message: str) -> WhereError:
    loc = len(PREFIX.encode()) + len(text[:pos].encode())
    return WhereError([f'At location {loc}: {message} at or near "{text[pos:]}"'])


_NOT_FUNCTIONS = {
    "IN",
    "ANY",
    "ALL",
    "SOME",
    "AND",
    "OR",
    "NOT",
    "IS",
    "BETWEEN",
    "LIKE",
    "ILIKE",
    "ARRAY",
    "VALUES",
    "SELECT",
    "WHERE",
    "ESCAPE",
    "THEN",
    "WHEN",
    "ELSE",
    "CASE",
    "AS",
    "FROM",
}


def _keyword_var(tok: Token) -> bool:
    return tok.token_type == TT.VAR and tok.text.upper() in _KEYWORD_VARS


def _function_keyword(tok: Token) -> bool:
    """A keyword token that can name a function (``now()``, ``left()``...)."""
    return tok.text.replace("_", "a").isalnum() and tok.text.upper() not in _NOT_FUNCTIONS


def _check_tokens(text: str, tokens: list[Token]) -> list[Token]:
    """Postgres-grammar checks sqlglot does not make; returns the tokens without a trailing ``;``."""
    while tokens and tokens[-1].token_type == TT.SEMICOLON:
        tokens = tokens[:-1]
    if not tokens:
        raise syntax_error(text, len(text), None)
    depth = 0
    for i, tok in enumerate(tokens):
        tt = tok.token_type
        prev = tokens[i - 1] if i else None
        if tt == TT.SEMICOLON:
            raise WhereError(['unescaped ";" causing statement split'])
        if tt in (TT.L_PAREN, TT.L_BRACKET):
            depth += 1
        elif tt in (TT.R_PAREN, TT.R_BRACKET):
            depth -= 1
            if depth < 0:
                raise syntax_error(text, tok.start, _raw(text, tok))
        if tt == TT.SELECT and (prev is None or prev.token_type != TT.L_PAREN):
            raise syntax_error(text, tok.start, _raw(text, tok))
        if (
            depth == 0
            and tt in _CLAUSES
            and not (tt == TT.FROM and prev is not None and prev.token_type == TT.DISTINCT)
        ):
            raise WhereError(["malformed query ending with SQL clauses"])
        if tt == TT.R_PAREN and prev is not None and prev.token_type == TT.L_PAREN:
            before = tokens[i - 2] if i >= 2 else None
            if before is None or not (before.token_type == TT.VAR or _function_keyword(before)):
                raise syntax_error(text, tok.start, _raw(text, tok))
        if prev is not None and tt in _OPERAND_START and prev.token_type in _OPERAND_END:
            prev_is_keyword = _keyword_var(prev) or _keyword_var(tok)
            after_cast = i >= 2 and tokens[i - 2].token_type in (TT.DCOLON, TT.ALIAS)
            if not prev_is_keyword and not (prev.token_type == TT.VAR and after_cast):
                raise syntax_error(text, tok.start, _raw(text, tok))
    return tokens


@functools.lru_cache(maxsize=256)  # bounded: not per shape; texts differing in constants never hit
def parse_text(text: str) -> Parsed:
    """One sqlglot expression for ``text`` or a :class:`WhereError` with Postgres-style syntax errors.

    Cached: many shapes share a clause text and differ in ``$n`` parameters only (the tree is only read).
    """
    try:
        tokens = _DIALECT.tokenize(text)
    except TokenError:
        raise _unterminated(text) from None
    tokens = _check_tokens(text, tokens)
    _check_size(text, tokens)
    body = text[: tokens[-1].end + 1]
    try:
        trees = [t for t in sqlglot.parse(body, read=_DIALECT) if t is not None]
    except ParseError as err:
        raise _parse_error(text, tokens, err) from None
    if len(trees) != 1:
        raise WhereError(['unescaped ";" causing statement split'])
    return Parsed(text, trees[0], tokens)


def _check_size(text: str, tokens: list[Token]) -> None:
    """Refuse a clause nested deeper than ``MAX_NESTING`` or with more than ``MAX_OPERATORS`` operators."""
    depth = operators = 0
    for tok in tokens:
        tt = tok.token_type
        if tt in (TT.L_PAREN, TT.L_BRACKET):
            depth += 1
            if depth > MAX_NESTING:
                loc = len(text[: tok.start].encode())
                msg = f"At location {loc}: expression nested deeper than {MAX_NESTING} levels"
                raise WhereError([msg])
        elif tt in (TT.R_PAREN, TT.R_BRACKET):
            depth -= 1
        elif tt not in _NOT_OPERATORS:
            operators += 1
            if operators > MAX_OPERATORS:
                loc = len(text[: tok.start].encode())
                msg = (
                    f"At location {loc}: more than {MAX_OPERATORS} operators in one clause"
                    " (a long list of alternatives is one IN (...) or = ANY ($1))"
                )
                raise WhereError([msg])


def _function_arity_error(text: str, tokens: list[Token], close: int) -> WhereError | None:
    """sqlglot refuses known functions called with another arity; Postgres would say it has none."""
    depth, commas, i = 0, 0, close - 1
    while i >= 0:
        tt = tokens[i].token_type
        if tt in (TT.R_PAREN, TT.R_BRACKET):
            depth += 1
        elif tt in (TT.L_PAREN, TT.L_BRACKET):
            if depth == 0:
                break
            depth -= 1
        elif tt == TT.COMMA and depth == 0:
            commas += 1
        i -= 1
    if i < 1:
        return None
    name = tokens[i - 1]
    arity = 0 if i == close - 1 else commas + 1
    loc = len(text[: name.start].encode())
    return WhereError(
        [f"At location {loc}: unknown or unsupported function {_raw(text, name).lower()}/{arity}"]
    )


def _parse_error(text: str, tokens: list[Token], err: ParseError) -> WhereError:
    info = err.errors[0] if err.errors else {}
    line, col = int(info.get("line") or 1), int(info.get("col") or 1)
    lines = text.split("\n")
    pos = sum(len(x) + 1 for x in lines[: line - 1]) + col - 1
    hit = next((t for t in tokens if t.start <= pos <= t.end), None)
    if hit is None:
        hit = next((t for t in tokens if t.start >= pos), None)
    description = str(info.get("description", ""))
    if (
        hit is not None
        and hit.token_type == TT.R_PAREN
        and (
            "number of provided arguments" in description
            or description.startswith("Required keyword: 'this'")
        )
    ):
        wrong_arity = _function_arity_error(text, tokens, tokens.index(hit))
        if wrong_arity is not None:
            return wrong_arity
    if hit is None or (hit is tokens[-1] and "missing" in str(info.get("description", ""))):
        return syntax_error(text, len(text), None)
    if hit is tokens[-1] and str(info.get("description", "")).startswith("Expecting"):
        return syntax_error(text, len(text), None)
    return syntax_error(text, hit.start, _raw(text, hit))
