# humigraph virtual board: what the ESP32 port's main.c does at boot.
# The process starts with cwd = the flash directory. The flash becomes the root filesystem
# (so "/config.json" and "config.json" are the same file, as on the board, and nothing outside
# the flash can be reached), the control directory is mounted at /.vboard, then boot.py and
# main.py run in the __main__ namespace that the REPL uses afterwards (like pyexec_file).
import os
import sys


def _vb_setup():
    flash = os.getcwd()
    ctl = os.getenv("HUMIGRAPH_CTL")
    try:
        import vfs

        vfs.umount("/")
        vfs.mount(vfs.VfsPosix(flash), "/")
        if ctl:
            vfs.mount(vfs.VfsPosix(ctl), "/.vboard")
            os.putenv("HUMIGRAPH_CTL", "/.vboard")
        os.chdir("/")
        sys.path[:] = ["/.vboard/shims", "", ".frozen", "/lib"]
        try:
            # A ROMFS image (the firmware's package, as on a board with a ROMFS partition): its
            # bytecode runs in place. Read into one buffer of the exact size, no reallocations.
            rom = bytearray(os.stat("/.vboard/romfs.img")[6])
            with open("/.vboard/romfs.img", "rb") as f:
                f.readinto(rom)
            vfs.mount(vfs.VfsRom(rom), "/rom")
            sys.path.insert(2, "/rom")
        except OSError:
            pass
    except Exception as e:
        # no VFS: plain host paths, cwd = flash
        sys.print_exception(e)
        sys.path[:] = [(ctl or ".") + "/shims", "", ".frozen", flash + "/lib"]


def _vb_exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False


def _vb_traceback(e):
    # the traceback as the board prints it: without this file's frame
    try:
        import io

        s = io.StringIO()
        sys.print_exception(e, s)
        t = s.getvalue()
        i = t.find("_vboot.py")
        if i >= 0:
            t = t[: t.rfind("\n", 0, i) + 1] + t[t.find("\n", i) + 1 :]
        sys.stdout.write(t)
    except Exception:
        sys.print_exception(e)


_vb_setup()
_vb_raw = os.getenv("HUMIGRAPH_VBOOT_RAW") == "1"

for _vb_name in ("boot.py", "main.py"):
    if _vb_name == "main.py" and _vb_raw:
        # soft reset in raw REPL mode: the board runs boot.py only; tell the runner we are done
        sys.stdout.write("\x00VBOOT-READY\x00")
        break
    if not _vb_exists(_vb_name):
        continue
    try:
        execfile(_vb_name, globals())
    except SystemExit:
        # machine.reset()/deepsleep() wrote their exit file; an application's own sys.exit()
        # is a soft reset on the ESP32
        _vb_ctl = os.getenv("HUMIGRAPH_CTL")
        if _vb_ctl and not _vb_exists(_vb_ctl + "/exit"):
            with open(_vb_ctl + "/exit", "w") as _vb_f:
                _vb_f.write("soft_reset\n")
        raise
    except BaseException as _vb_e:  # noqa: B036 - as pyexec_file: print and go on to the REPL
        _vb_traceback(_vb_e)
        del _vb_e

for _vb_name in ("_vb_setup", "_vb_exists", "_vb_traceback", "_vb_raw", "_vb_name"):
    try:
        del globals()[_vb_name]
    except KeyError:
        pass
