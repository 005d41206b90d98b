"""Test plugins: real Postgres fixtures (see tests/fixtures/pg.py)."""

pytest_plugins = ["tests.fixtures.pg", "tests.fixtures.service"]
