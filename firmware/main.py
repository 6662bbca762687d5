# humigraph firmware entry point. The REPL helpers are imported here so that they stay in the
# REPL's namespace after Ctrl-C or in safe mode: status(), read(), setkey(key, value), start().
from humigraph.app import read, setkey, start, status  # noqa: F401

start()
