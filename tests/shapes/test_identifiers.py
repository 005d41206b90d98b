from __future__ import annotations

import pytest

from sync.shapes.identifiers import (
    InvalidIdentifier,
    parse_columns,
    parse_identifier,
    parse_relation,
    quote_identifier,
    quote_relation,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tbl", ("public", "tbl")),
        ("Tbl", ("public", "tbl")),
        ("schema.tbl", ("schema", "tbl")),
        ("MySchema.MyTable", ("myschema", "mytable")),
        ('"Quoted"."Name"', ("Quoted", "Name")),
        ('schema."with spaces"', ("schema", "with spaces")),
        ('"with.dot"."a/b"', ("with.dot", "a/b")),
        ('"say ""hi"""', ("public", 'say "hi"')),
        ('"a,b"', ("public", "a,b")),
        ("_x$1", ("public", "_x$1")),
        ("Ünïcödé", ("public", "Ünïcödé")),  # only ASCII is folded, as Postgres does in UTF-8
        ("café", ("public", "café")),
        ("e\u0301t\u00e9", ("public", "e\u0301t\u00e9")),  # combining mark allowed after the first letter
        ("a" * 63, ("public", "a" * 63)),
    ],
)
def test_parse_relation(text: str, expected: tuple[str, str]) -> None:
    assert parse_relation(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.b.c", "Invalid relation identifier, too many delimiters: a.b.c"),
        ('"a".b."c"', 'Invalid relation identifier, too many delimiters: "a".b."c"'),
        ("", "Invalid zero-length delimited identifier"),
        ('""', "Invalid zero-length delimited identifier"),
        ("a.", "Invalid zero-length delimited identifier"),
        ('"x".""', "Invalid zero-length delimited identifier"),
        ("foob@r", "Invalid unquoted identifier contains special characters: foob@r"),
        ("1abc", "Invalid unquoted identifier contains special characters: 1abc"),
        ("$abc", "Invalid unquoted identifier contains special characters: $abc"),
        ("with space", "Invalid unquoted identifier contains special characters: with space"),
        ('Foo"Bar"', 'Invalid unquoted identifier contains special characters: Foo"Bar"'),
        ('"Foo"Bar"', 'Invalid identifier with unescaped quote: Foo"Bar'),
        ("\u0301a", "Invalid unquoted identifier contains special characters: \u0301a"),
        ("a" * 64, f"Invalid identifier, longer than 63 characters: {'a' * 64}"),
        ("é" * 32, f"Invalid identifier, longer than 63 characters: {'é' * 32}"),  # 64 bytes
    ],
)
def test_parse_relation_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier) as exc:
        parse_relation(text)
    assert str(exc.value) == message
    assert exc.value.message == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id", ("id",)),
        ("id,Title", ("id", "title")),
        ('"id","title"', ("id", "title")),
        ('"Id","a,b","q""uote"', ("Id", "a,b", 'q"uote')),
        ("id,id,x", ("id", "x")),
        ('id,"ID"', ("id", "ID")),
    ],
)
def test_parse_columns(text: str, expected: tuple[str, ...]) -> None:
    assert parse_columns(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,,x", "Invalid zero-length delimited identifier"),
        ("id,", "Invalid zero-length delimited identifier"),
        ("", "Invalid zero-length delimited identifier"),
        ('id,""', "Invalid zero-length delimited identifier"),
        ("id, x", "Invalid unquoted identifier contains special characters:  x"),
        ('"a"b"', 'Invalid identifier with unescaped quote: a"b'),
    ],
)
def test_parse_columns_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier, match=None) as exc:
        parse_columns(text)
    assert str(exc.value) == message


def test_parse_identifier_round_trips_quoting() -> None:
    for name in ["a", "A", 'a"b', "with space", "a.b", "", "x" * 10]:
        if name:
            assert parse_identifier(quote_identifier(name)) == name
    assert quote_relation("public", 'we"ird') == '"public"."we""ird"'
