"""A throwaway PostgreSQL database per test, on the local server (skips when there is none).

``HUMIGRAPH_TEST_PG`` names the server's maintenance database (default
``postgresql://127.0.0.1:5432/test``); each test gets ``CREATE DATABASE humigraph_test_<random>``,
dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ADMIN_DSN = os.environ.get("HUMIGRAPH_TEST_PG", "postgresql://127.0.0.1:5432/test")


def _admin() -> object:
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'humigraph[postgres]')")
    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
        reason = " ".join(str(e).split())[:160]
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_DSN}: {reason}")


def dsn_for(name: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def temp_database() -> Iterator[str]:
    """Yields the URL of a new empty database; drops it (and its connections) afterwards."""
    admin = _admin()
    name = f"humigraph_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    try:
        yield dsn_for(name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]
