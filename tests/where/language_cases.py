"""The WHERE clauses the language accepts over ``tables.ITEMS``, each with the canonical SQL and
parameters it compiles to.  test_language.py checks that SQL; test_security.py checks that the SQL of each
parses back to the very same tree.  The list lives here, not in test_language.py, because a test module
must not import from another test module.
"""

from __future__ import annotations

ACCEPTED = [
    ("id = 1", '("id" = CAST(%s AS int4))', ["1"]),
    ("id = $1", '("id" = CAST(%s AS int4))', ["5"]),
    ("id = 1;", '("id" = CAST(%s AS int4))', ["1"]),
    ("id = 1 -- comment", '("id" = CAST(%s AS int4))', ["1"]),
    ("id = 1 /* c */ OR id = 2", '(("id" = CAST(%s AS int4)) OR ("id" = CAST(%s AS int4)))', ["1", "2"]),
    ("status = 'ok'", '("status" = CAST(%s AS "public"."mood"))', ["ok"]),
    ("status::text < 'ok'", '(CAST("status" AS text) COLLATE "C" < CAST(%s AS text))', ["ok"]),
    ("\"Weird Name\" = 'x'", '("Weird Name" = CAST(%s AS text))', ["x"]),
    ("span = interval '1 day'", '("span" = CAST(%s AS interval))', ["P1D"]),
    ("id = 2147483648", '(CAST("id" AS int8) = CAST(%s AS int8))', ["2147483648"]),
    ("id = 1e3", '(CAST("id" AS numeric) = CAST(%s AS numeric))', ["1000"]),
    ("big = -9223372036854775808", '("big" = CAST(%s AS int8))', ["-9223372036854775808"]),
    ("- -2147483648 = big", '(CAST(%s AS int8) = "big")', ["2147483648"]),
    ("tags @> ARRAY['a']", '("tags" @> CAST(%s AS text[]))', ["{a}"]),
    ("nums[1] = 1", '(("nums")[CAST(%s AS int4)] = CAST(%s AS int4))', ["1", "1"]),
    ("nums[2:] = '{1}'", '(("nums")[CAST(%s AS int4):] = CAST(%s AS int4[]))', ["2", "{1}"]),
    ("id % 2 = 0", '(("id" %% CAST(%s AS int4)) = CAST(%s AS int4))', ["2", "0"]),
    ("E'\\x41' = title", '(CAST(%s AS text) = "title")', ["A"]),
    ("U&'\\0041' = title", '(CAST(%s AS text) = "title")', ["A"]),
    ("$$it's$$ = title", '(CAST(%s AS text) = "title")', ["it's"]),
    ("pg_catalog.lower(title) = 'a'", '(lower(("title" COLLATE "C")) = CAST(%s AS text))', ["a"]),
    (
        "title ILIKE '%a%' AND id = 3 OR big < 5",
        '(((("title" COLLATE "C") ILIKE CAST(%s AS text)) AND ("id" = CAST(%s AS int4))) OR ("big" < CAST(%s AS int8)))',
        ["%a%", "3", "5"],
    ),
    (
        "id in (1, 2, NULL)",
        '("id" IN (CAST(%s AS int4), CAST(%s AS int4), CAST(%s AS int4)))',
        ["1", "2", None],
    ),
    ("greatest(id, score) > 1", '(greatest(CAST("id" AS float8), "score") > CAST(%s AS float8))', ["1"]),
    (
        "at AT TIME ZONE 'Europe/Paris' > '2020-01-01'",
        '(timezone(CAST(%s AS text), "at") > CAST(%s AS timestamp))',
        ["Europe/Paris", "2020-01-01 00:00:00"],
    ),
    ("title LIKE 'a!%' ESCAPE '!'", '(("title") LIKE CAST(%s AS text) ESCAPE %s)', ["a!%", "!"]),
]
