"""Polling for a condition in end-to-end tests, with a failure message that says what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    pred: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    every: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> Any:
    """``pred()``'s first truthy value; AssertionError naming ``what`` (and ``detail()``) after
    ``timeout`` s. Exceptions of the ``ignore`` types count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = pred()
        except ignore:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            extra = f"; {detail()}" if detail else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(every)
