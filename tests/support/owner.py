"""Files a test hands to a Mosquitto it starts as root (which drops to the mosquitto user)."""

from __future__ import annotations

import os
from pathlib import Path


def give_to_mosquitto(paths: list[Path]) -> None:
    """chown to the mosquitto user when we are root and that user exists; otherwise nothing."""
    if os.geteuid() != 0:
        return
    import pwd

    try:
        u = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for p in paths:
        os.chown(p, u.pw_uid, u.pw_gid)
