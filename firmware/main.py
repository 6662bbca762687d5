# humigraph firmware entry point. The REPL helpers stay in the REPL's namespace after Ctrl-C or
# in safe mode; their code loads only when called: status(), read(), setkey(key, value), start().
from humigraph.start import start


def status():
    from humigraph.repl import status

    status()


def read():
    from humigraph.repl import read

    read()


def setkey(key, value):
    from humigraph.repl import setkey

    setkey(key, value)


start()
