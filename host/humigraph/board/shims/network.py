# humigraph virtual board: `network` (ESP32 WLAN semantics) driven by the control files
# `wifi` ("up" | "down" | "wrong_password"; absent = up) and `rssi` (dBm; absent = -55).
# Sockets themselves are real host sockets: the runner's link proxy cuts the MQTT connection.
import os
import time
from machine import _ctl_read, unique_id

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204

_ASSOC_LEAVE = 8
_RETRY_GAP = 1000  # ms between automatic reconnection attempts
_link = ["up", -55, None]  # cached state of the control files: link, rssi, ticks of the last read
_host = ["mpy-esp32"]


def _read_link(force=False):
    now = time.ticks_ms()
    if force or _link[2] is None or time.ticks_diff(now, _link[2]) >= 250:
        w = _ctl_read("wifi")
        _link[0] = w.strip() if w else "up"
        r = _ctl_read("rssi")
        try:
            _link[1] = int(r) if r else -55
        except ValueError:
            _link[1] = -55
        _link[2] = now
    return _link[0]


def hostname(name=None):
    if name is None:
        return _host[0]
    _host[0] = name


class _State:
    def __init__(self):
        self.active = False
        self.requested = False  # connect() asked for, not disconnect()ed: auto-reconnect
        self.connected = False
        self.reason = 0  # last disconnection reason, as on the ESP32 (0 = none)
        self.attempt_end = None  # ticks_ms when the attempt in progress resolves
        self.next_attempt = None  # ticks_ms of the next automatic attempt
        self.tries = 0
        self.reconnects = -1
        self.ssid = ""
        self.ifc = None


_states = {}


def _dur():
    return 300 + os.urandom(1)[0] * 500 // 255


class WLAN:
    IF_STA = 0
    IF_AP = 1
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2

    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id
        s = _states.get(interface_id)
        if s is None:
            s = _states[interface_id] = _State()
        self._s = s

    def _update(self):
        s = self._s
        if not s.active or self._if != STA_IF:
            return
        link = _read_link()
        now = time.ticks_ms()
        if s.connected:
            if link != "up":
                s.connected = False
                s.reason = STAT_BEACON_TIMEOUT
                s.tries = 0
                if s.requested:
                    s.next_attempt = time.ticks_add(now, _RETRY_GAP)
            return
        if s.attempt_end is not None:
            if time.ticks_diff(now, s.attempt_end) < 0:
                return
            s.attempt_end = None
            if link == "up":
                s.connected = True
                s.reason = 0
                s.tries = 0
                return
            s.reason = STAT_WRONG_PASSWORD if link == "wrong_password" else STAT_NO_AP_FOUND
            s.tries += 1
            if s.requested and (s.reconnects < 0 or s.tries <= s.reconnects):
                s.next_attempt = time.ticks_add(now, _RETRY_GAP)
            return
        if s.next_attempt is not None and time.ticks_diff(now, s.next_attempt) >= 0:
            s.next_attempt = None
            if s.reconnects < 0 or s.tries <= s.reconnects:
                s.attempt_end = time.ticks_add(now, _dur())

    def active(self, is_active=None):
        s = self._s
        if is_active is None:
            return s.active
        if not is_active:
            if s.active:
                s.connected = False
                s.requested = False
                s.attempt_end = s.next_attempt = None
                s.reason = _ASSOC_LEAVE
        s.active = bool(is_active)
        return s.active

    def connect(self, ssid=None, key=None, *, bssid=None):
        s = self._s
        if self._if != STA_IF:
            raise OSError("STA required")
        if not s.active:
            raise OSError("Wifi Not Started")
        self._update()
        if s.attempt_end is not None:
            raise OSError("Wifi Internal Error")
        if ssid is not None:
            s.ssid = ssid
        s.connected = False
        s.requested = True
        s.reason = 0
        s.tries = 0
        s.next_attempt = None
        s.attempt_end = time.ticks_add(time.ticks_ms(), _dur())

    def disconnect(self):
        s = self._s
        s.requested = False
        s.connected = False
        s.attempt_end = s.next_attempt = None
        s.reason = _ASSOC_LEAVE

    def isconnected(self):
        self._update()
        return self._s.connected

    def status(self, param=None):
        self._update()
        s = self._s
        if param is None:
            if self._if != STA_IF:
                return None
            if s.connected:
                return STAT_GOT_IP
            if s.reason == STAT_NO_AP_FOUND:
                return STAT_NO_AP_FOUND
            if s.reason == STAT_WRONG_PASSWORD:
                return STAT_WRONG_PASSWORD
            if s.reason == _ASSOC_LEAVE:
                return STAT_IDLE
            if s.requested and (s.attempt_end is not None or s.next_attempt is not None):
                return STAT_CONNECTING
            if s.reason == 0:
                return STAT_IDLE
            return s.reason
        if param == "rssi":
            if self._if != STA_IF:
                raise OSError("STA required")
            if not s.connected:
                raise OSError("Wifi Not Connected")
            _read_link(True)
            return _link[1]
        if param == "stations":
            return []
        raise ValueError("unknown status param")

    def scan(self):
        if not self._s.active:
            raise OSError("STA must be active")
        if _read_link() == "down":
            return []
        return [(b"humigraph-virtual", b"\x02\x00\x00\x00\x00\x01", 6, _link[1], 3, False)]

    def _ip(self):
        u = unique_id()
        return "10.42.%d.%d" % (u[4], 2 + u[5] % 250)

    def ifconfig(self, cfg=None):
        s = self._s
        if cfg is not None:
            s.ifc = tuple(cfg)
            return None
        if s.ifc is not None:
            return s.ifc
        if self._if == AP_IF:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0")
        if not self.isconnected():
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        return (self._ip(), "255.255.255.0", "10.42.0.1", "10.42.0.1")

    def config(self, *args, **kw):
        s = self._s
        if kw:
            for k in kw:
                v = kw[k]
                if k in ("ssid", "essid"):
                    s.ssid = v
                elif k in ("hostname", "dhcp_hostname"):
                    _host[0] = v
                elif k == "reconnects":
                    s.reconnects = v
                elif k not in ("pm", "txpower", "channel", "key", "password", "security", "authmode"):
                    raise ValueError("unknown config param")
            return None
        k = args[0]
        if k == "mac":
            u = unique_id()
            return u if self._if == STA_IF else u[:5] + bytes([(u[5] + 1) & 0xFF])
        if k in ("ssid", "essid"):
            return s.ssid
        if k in ("hostname", "dhcp_hostname"):
            return _host[0]
        if k == "rssi":
            _read_link(True)
            return _link[1]
        if k == "reconnects":
            return s.reconnects
        if k == "channel":
            return 6
        if k == "txpower":
            return 20
        if k == "pm":
            return WLAN.PM_PERFORMANCE
        raise ValueError("unknown config param")
