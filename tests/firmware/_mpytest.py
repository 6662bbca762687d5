# Tiny test runner for firmware test scripts, run under the MicroPython unix port:
#
#     micropython tests/firmware/foo_test.py        (MICROPYPATH not needed)
#
# A script defines plain test_* functions (sync or async) and ends with
#
#     if __name__ == "__main__":
#         _mpytest.main(globals())
#
# Tests run in name order; failures print the test name and traceback; the last line
# is "N passed, M failed" and the exit status is 1 if anything failed. Also works under CPython.
import sys

MICROPYTHON = sys.implementation.name == "micropython"

# Make `import humigraph...` resolve to firmware/ (appended: a MICROPYPATH entry, e.g. a directory of
# mpy-cross output, still wins) and keep the frozen asyncio importable even when MICROPYPATH replaced
# the default path (that drops ".frozen"). Never on CPython: there `humigraph` is the host package.
if MICROPYTHON:
    _fw = (__file__.rpartition("/")[0] or ".") + "/../../firmware"
    if _fw not in sys.path:
        sys.path.append(_fw)
    if ".frozen" not in sys.path:
        sys.path.append(".frozen")


def raises(exc, fn, *args, **kw):
    # -> the exception instance; AssertionError if fn did not raise exc
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("{} did not raise {}".format(getattr(fn, "__name__", fn), exc.__name__))


def eq(got, want, what=""):
    if got != want:
        raise AssertionError(f"{what}\n  got:  {got!r}\n  want: {want!r}")


def _print_exc(e):
    pe = getattr(sys, "print_exception", None)
    if pe is not None:  # MicroPython
        pe(e)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


def run(tests, only=None):
    # tests: dict (a module's globals()) -> (passed, failed)
    names = [n for n in tests if n.startswith("test_") and callable(tests[n])]
    names.sort()  # a module dict has no definition order on MicroPython
    if only:
        names = [n for n in names if only in n]
    passed = failed = 0
    for name in names:
        try:
            r = tests[name]()
            if r is not None and hasattr(r, "send"):  # coroutine: run it on a fresh event loop
                import asyncio

                asyncio.run(r)
                if MICROPYTHON:  # drop tasks a failed test left behind
                    asyncio.new_event_loop()
            passed += 1
            print("ok  ", name)
        except Exception as e:
            failed += 1
            print("FAIL", name)
            _print_exc(e)
    print(f"{passed} passed, {failed} failed")
    return passed, failed


def main(tests):
    # `micropython foo_test.py [substring]` runs the tests whose name contains substring
    only = sys.argv[1] if len(sys.argv) > 1 else None
    if run(tests, only)[1]:
        sys.exit(1)


def firmware_module(name, until=None):
    # "humigraph.mqtt" -> that firmware module. On CPython the file is loaded by path under a
    # private name (the host toolkit owns `humigraph`), with a stand-in `micropython.const`.
    # until="marker" (MicroPython only): compile just the source before the first line starting
    # with marker, for a test of a self-contained leading section (e.g. a pure protocol layer) of
    # a module whose whole source needs more heap to compile than the 64 KiB test heap has.
    if MICROPYTHON:
        if until is None:
            mod = __import__(name)
            for part in name.split(".")[1:]:
                mod = getattr(mod, part)
            return mod
        # Copied line by line to a temp module and imported from there: compiling from a file
        # never holds the source text in the heap.
        import os
        import time

        tmp = os.getenv("HUMIGRAPH_TEST_TMP") or "/tmp"
        key = f"_section_{time.ticks_us()}"
        # (two nested `with`s: MicroPython has no parenthesised context managers)
        with open(_fw + "/" + name.replace(".", "/") + ".py") as src:  # noqa: SIM117
            with open(f"{tmp}/{key}.py", "w") as dst:
                for line in src:
                    if line.startswith(until):
                        break
                    dst.write(line)
        sys.path.insert(0, tmp)
        try:
            return __import__(key)
        finally:
            sys.path.remove(tmp)
            os.remove(f"{tmp}/{key}.py")
    import importlib.util
    import os
    import types

    if "micropython" not in sys.modules:
        shim = types.ModuleType("micropython")
        shim.const = lambda x: x
        sys.modules["micropython"] = shim
    key = "_firmware_" + name.replace(".", "_")
    if key not in sys.modules:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "firmware")
        spec = importlib.util.spec_from_file_location(
            key, os.path.join(root, *name.split(".")) + ".py"
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]
