"""Test plugins: real Postgres fixtures (see tests/fixtures/pg.py); assertion rewriting for helpers."""

from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.pg", "tests.fixtures.service"]


def _helper_modules() -> list[str]:
    """Every module under tests/ that is not a test module (support modules, harnesses, fixtures): pytest
    rewrites the asserts of test modules only, so a failing assert in a shared helper would show a bare
    ``AssertionError``; registered here, before any test module imports them, it shows its values too."""
    root = Path(__file__).parent
    return [
        ".".join(("tests", *path.relative_to(root).with_suffix("").parts))
        for path in sorted(root.rglob("*.py"))
        if not path.name.startswith("test_") and path.name not in ("conftest.py", "__init__.py")
    ]


pytest.register_assert_rewrite(*_helper_modules())
