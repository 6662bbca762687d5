"""Fixtures shared by the host tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.pg import temp_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL of each backend: a fresh SQLite file, or a throwaway PostgreSQL database
    (skipped with the reason when no server is reachable)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gw.db'}"
    else:
        with temp_database() as dsn:
            yield dsn
