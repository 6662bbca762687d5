# humigraph firmware for ESP32 + DHT11/DHT22. Kept tiny so that `import humigraph.x` costs only x.
VERSION = "0.1.0"


def unload(name):
    # Drops a submodule imported for a rare job (config check, a command, discovery) so its
    # bytecode is garbage-collected: the heap is too small to keep everything resident.
    import sys

    sys.modules.pop("humigraph." + name, None)
    try:
        delattr(sys.modules["humigraph"], name)
    except (AttributeError, KeyError):
        pass
