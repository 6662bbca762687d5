# Fix-it hints for the console, imported only when a line needs one (see sensor.Sensor._account).
from .sensor import ERRORS, IMPLAUSIBLE

_SENSOR = (
    None,
    "no response from the sensor: check the data wire is on GPIO%d, 3.3 V and GND are connected, "
    "and a 4.7-10 kOhm pull-up joins data and 3.3 V",
    "corrupted bits: shorten the cable (DHT22 under ~20 m, DHT11 under ~5 m), use a 4.7 kOhm "
    "pull-up on GPIO%d, keep the cable away from mains wiring",
    "impossible value from the sensor on GPIO%d: check sensor.model matches the part "
    "(DHT11 is blue, DHT22/AM2302 white) or replace the sensor",
    "the sensor on GPIO%d could not be set up: check sensor.pin",
)


def sensor_hint(sn, err):
    what = ERRORS[err]
    if err == IMPLAUSIBLE:
        t, rh = sn.bad
        what += " (t=%s%d.%d rh=%d.%d)" % ("-" if t < 0 else "", abs(t) // 10, abs(t) % 10,
                                           rh // 10, rh % 10)
    return "%s on GPIO%d: %s; %s" % (sn.model.upper(), sn.pin, what, _SENSOR[err] % sn.pin)
