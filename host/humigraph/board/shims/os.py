# humigraph virtual board: `os` = the built-in os, with what differs on the virtual flash fixed:
# - rename() of absolute paths: the flash is a VfsPosix mounted at "/", whose rename() mixes up two
#   absolute paths (it reuses one path buffer), so they are made relative to the working directory,
#   which then resolve through the process's real working directory inside the flash;
# - ilistdir() entries carry the file size, as on LittleFS; the runner's /.vboard mount is hidden;
# - statvfs() describes a 2 MiB filesystem of 4 KiB blocks (an ESP32 with 4 MiB of flash) rather
#   than the host's disk.
from uos import *
import uos as _u

_BLOCKS = 512


def _sandboxed():
    return _u.getenv("HUMIGRAPH_CTL") == "/.vboard"


def _rel(p):
    if p[:1] != "/" or p[:9] == "/.vboard/" or not _sandboxed():
        return p
    cwd = _u.getcwd()
    if cwd[:8] == "/.vboard":
        return p
    n = 0 if cwd == "/" else cwd.count("/")
    return "../" * n + p[1:]


def rename(old, new):
    _u.rename(_rel(old), _rel(new))


def _join(d, name):
    if d in ("", "."):
        return name
    return d + name if d[-1] == "/" else d + "/" + name


def _root(path):
    return path == "/" or path in ("", ".") and _u.getcwd() == "/"


def ilistdir(path=""):
    hide = _sandboxed() and _root(path)
    for e in _u.ilistdir(path):
        if hide and e[0] == ".vboard":
            continue  # the runner's mount point is not part of the board's flash
        if len(e) < 4:
            size = 0
            if e[1] == 0x8000:
                try:
                    size = _u.stat(_join(path, e[0]))[6]
                except OSError:
                    pass
            e = (e[0], e[1], e[2], size)
        yield e


def listdir(path=None):
    return [e[0] for e in ilistdir("" if path is None else path)]


def _used(d):
    n = 1
    for e in _u.ilistdir(d):
        p = _join(d, e[0])
        if p == "/.vboard":
            continue
        if e[1] == 0x4000:
            n += _used(p)
        else:
            try:
                n += max(1, (_u.stat(p)[6] + 4095) // 4096)
            except OSError:
                pass
    return n


def statvfs(path):
    if not _sandboxed():
        return _u.statvfs(path)
    free = max(0, _BLOCKS - _used("/"))
    return (4096, 4096, _BLOCKS, free, free, 0, 0, 0, 0, 255)
