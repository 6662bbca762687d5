"""A warning that cannot flood the journal: bad input and failing passes repeat by the thousand."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """At most one warning per ``period`` seconds on ``logger``; says how many were suppressed."""

    def __init__(self, logger: logging.Logger, period: float = 10.0) -> None:
        self.logger = logger
        self.period = period
        self._last = -1e9
        self._suppressed = 0

    def warn(self, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last < self.period:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._suppressed = 0
        self._last = now
        self.logger.warning(msg + extra, *args, exc_info=exc_info)
