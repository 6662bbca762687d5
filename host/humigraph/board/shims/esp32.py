# humigraph virtual board: `esp32` (NVS on the flash directory, a plausible chip temperature,
# wake sources as no-ops).
import json
import os

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
HEAP_DATA = 4
HEAP_EXEC = 1


def mcu_temperature():
    return 42 + os.urandom(1)[0] % 5


def raw_temperature():
    return mcu_temperature() * 9 // 5 + 32


def wake_on_ext0(pin, level):
    pass


def wake_on_ext1(pins, level):
    pass


def wake_on_touch(wake):
    pass


def wake_on_ulp(wake):
    pass


def gpio_deep_sleep_hold(enable):
    pass


def idf_heap_info(capabilities):
    import gc

    f = gc.mem_free()
    return [(f + gc.mem_alloc(), f, f, f)]


def _enoent():
    import errno

    raise OSError(errno.ENOENT)


class NVS:
    # values are committed to .nvs_<namespace>.json on the flash; like the real NVS, set_* is
    # only durable after commit()
    def __init__(self, namespace):
        if not namespace or len(namespace) > 15:
            raise ValueError("invalid namespace")
        self._path = ".nvs_" + namespace + ".json"
        try:
            with open(self._path) as f:
                self._d = json.load(f)
        except (OSError, ValueError):
            self._d = {}

    def set_i32(self, key, value):
        self._d[key] = ["i", int(value)]

    def get_i32(self, key):
        v = self._d.get(key)
        if v is None or v[0] != "i":
            _enoent()
        return v[1]

    def set_blob(self, key, value):
        self._d[key] = ["b", bytes(value).hex()]

    def get_blob(self, key, buffer):
        v = self._d.get(key)
        if v is None or v[0] != "b":
            _enoent()
        data = bytes.fromhex(v[1])
        if len(buffer) < len(data):
            raise OSError(-4364)  # ESP_ERR_NVS_INVALID_LENGTH
        for i in range(len(data)):
            buffer[i] = data[i]
        return len(data)

    def erase_key(self, key):
        if key not in self._d:
            _enoent()
        del self._d[key]

    def commit(self):
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._d, f)
        os.rename(tmp, self._path)
