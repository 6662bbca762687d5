# DHT11/DHT22 byte decoding and plausibility, under the real MicroPython (and CPython).
import _mpytest
from _mpytest import eq

from humigraph.sensor import decode, plausible


def frame(b0, b1, b2, b3):
    return bytes((b0, b1, b2, b3, (b0 + b1 + b2 + b3) & 0xFF))


def test_dht22_positive():
    # 65.2 %RH = 0x028C, 35.1 C = 0x015F (datasheet example)
    eq(decode("dht22", frame(0x02, 0x8C, 0x01, 0x5F)), (351, 652))


def test_dht22_negative_temperature():
    # -10.1 C: sign bit 0x80 in the high temperature byte, magnitude 101 = 0x0065
    eq(decode("dht22", frame(0x01, 0xF4, 0x80, 0x65)), (-101, 500))


def test_dht22_zero_and_minus_point_one():
    eq(decode("dht22", frame(0x01, 0x90, 0x80, 0x01)), (-1, 400))
    eq(decode("dht22", frame(0x01, 0x90, 0x00, 0x00)), (0, 400))


def test_am2302_is_dht22_encoding():
    eq(decode("am2302", frame(0x03, 0xE8, 0x00, 0xFA)), (250, 1000))


def test_dht11_integer_only_part():
    # older DHT11: decimal bytes are zero
    eq(decode("dht11", frame(45, 0, 23, 0)), (230, 450))


def test_dht11_decimals():
    # newer DHT11: one decimal digit per value, the stock driver drops it
    eq(decode("dht11", frame(45, 3, 23, 7)), (237, 453))


def test_dht11_negative_temperature():
    # sign in bit 7 of the temperature decimal byte
    eq(decode("dht11", frame(60, 0, 2, 0x80 | 5)), (-25, 600))


def test_dht11_garbage_decimal_ignored():
    eq(decode("dht11", frame(45, 200, 23, 99)), (230, 450))


def test_plausible_accepts_normal_values():
    eq(plausible("dht22", 215, 452), True)
    eq(plausible("dht22", -399, 50), True)
    eq(plausible("dht11", 0, 350), True)


def test_plausible_rejects_rh_over_100():
    eq(plausible("dht22", 215, 1001), False)


def test_plausible_rejects_known_garbage():
    eq(plausible("dht11", 10, 10), False)  # the fake 1 C / 1 %
    eq(plausible("dht22", 0, 0), False)  # an all-zero frame passes the checksum
    eq(plausible("dht22", 0, 20), False)  # 0 C with 2 %


def test_plausible_rejects_out_of_range_temperature():
    eq(plausible("dht22", 801, 400), False)
    eq(plausible("dht11", 610, 400), False)
    eq(plausible("dht11", -201, 400), False)


def test_dht11_read_as_dht22_is_implausible():
    # the classic misconfiguration: 45 % / 23 C from a DHT11 decoded as a DHT22
    t, rh = decode("dht22", frame(45, 0, 23, 0))
    eq(plausible("dht22", t, rh), False)


if __name__ == "__main__":
    _mpytest.main(globals())
