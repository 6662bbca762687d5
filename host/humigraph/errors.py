"""One exception type per layer; ``cli.main`` turns any of them into one line and an exit code."""

from __future__ import annotations


class HumigraphError(Exception):
    """Base of every error the toolkit raises on purpose. ``str(e)`` is the one line a user sees."""

    exit_code = 1


class UsageError(HumigraphError):
    """The command line or a configuration value is wrong; the message names it and the fix."""

    exit_code = 2


class BoardError(HumigraphError):
    """A board (real or virtual) could not be started, reached or controlled."""


class BrokerError(HumigraphError):
    """The MQTT broker could not be started or reached."""


class SetupError(HumigraphError):
    """A required program or package is missing; the message says what to install."""


class FlashError(BoardError):
    """``humigraph flash`` failed: no port, wrong chip, esptool or mpremote failure, bad config."""


class ConsoleError(BoardError):
    """``humigraph console`` could not open or keep the serial port."""


class GatewayError(HumigraphError):
    """The gateway could not start or keep running: database, broker URL, HTTP address."""


class ModelError(HumigraphError):
    """A model file or its card is missing, unreadable or does not match the I/O contract."""
