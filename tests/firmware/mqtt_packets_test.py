# Byte-exact tests of the MQTT 3.1.1 packet layer (the pure functions) of
# firmware/humigraph/mqtt.py. Expected bytes are written out by hand from the OASIS MQTT 3.1.1 spec
# (sections in comments).
#
#     micropython tests/firmware/mqtt_packets_test.py      (also runs under CPython / pytest)
#
# Under MicroPython only the protocol section of mqtt.py is compiled: the whole module needs more
# than the 64 KiB test heap to compile from source on the 64-bit unix port (boards get mpy-cross
# output). The client itself is tested by mqtt_client_check.py and tests/host/test_firmware_mqtt.py.
import _mpytest
from _mpytest import eq, raises

mqtt = _mpytest.firmware_module("humigraph.mqtt", until="# ---- connection")

MQTT311 = b"\x00\x04MQTT\x04"  # 3.1.2.1 protocol name + 3.1.2.2 level 4


# ---- CONNECT (3.1) ----


def test_connect_full():
    pkt = mqtt.connect_packet(
        "dev1",
        keepalive=60,
        clean=True,
        user="u",
        password="pw",
        will_topic="t/s",
        will_msg="off",
        will_qos=1,
        will_retain=True,
    )
    # flags: user 0x80 | password 0x40 | will retain 0x20 | will QoS1 0x08 | will 0x04 | clean 0x02
    want = (
        b"\x10\x21"
        + MQTT311
        + b"\xee\x00\x3c"
        + b"\x00\x04dev1"
        + b"\x00\x03t/s"
        + b"\x00\x03off"
        + b"\x00\x01u"
        + b"\x00\x02pw"
    )
    eq(pkt, want)
    eq(type(pkt), bytes)


def test_connect_spec_example_flags():
    # 3.1.2.10 example: user, password, will QoS 1, will flag, clean session = 0xCE, keepalive 10
    pkt = mqtt.connect_packet(b"c", 10, True, b"u", b"p", b"w", b"m", 1, False)
    eq(pkt[9:12], b"\xce\x00\x0a")


def test_connect_minimal():
    eq(mqtt.connect_packet("c"), b"\x10\x0d" + MQTT311 + b"\x02\x00\x3c\x00\x01c")
    eq(
        mqtt.connect_packet("", keepalive=0, clean=False),
        b"\x10\x0c" + MQTT311 + b"\x00\x00\x00\x00\x00",
    )


def test_connect_will_qos0_no_retain_and_user_only():
    pkt = mqtt.connect_packet("id", 300, True, "usr", None, "w", b"\x00\x01", 0, False)
    want = (
        b"\x10\x1a"
        + MQTT311
        + b"\x86\x01\x2c"
        + b"\x00\x02id"
        + b"\x00\x01w"
        + b"\x00\x02\x00\x01"
        + b"\x00\x03usr"
    )
    eq(pkt, want)


def test_connect_rejects_bad_args():
    raises(ValueError, mqtt.connect_packet, "c", password="p")  # MQTT-3.1.2-22
    raises(ValueError, mqtt.connect_packet, "c", will_topic="t")  # will without message
    raises(ValueError, mqtt.connect_packet, "c", will_topic="t", will_msg="m", will_qos=3)
    raises(ValueError, mqtt.connect_packet, "c", keepalive=65536)


def test_connect_buffer_types_are_equivalent():
    a = mqtt.connect_packet("dev", user="u", password="p", will_topic="t", will_msg="m")
    b = mqtt.connect_packet(
        bytearray(b"dev"),
        user=memoryview(b"u"),
        password=b"p",
        will_topic=b"t",
        will_msg=bytearray(b"m"),
    )
    eq(a, b)


# ---- PUBLISH (3.3) ----


def test_publish_qos0():
    eq(mqtt.publish_packet("a/b", "hi"), b"\x30\x07\x00\x03a/bhi")
    eq(mqtt.publish_packet(b"a/b", b""), b"\x30\x05\x00\x03a/b")


def test_publish_qos0_retain():
    eq(mqtt.publish_packet("a/b", b"on", retain=True), b"\x31\x07\x00\x03a/bon")


def test_publish_qos1_pid():
    # 3.3.2.3 example: topic "a/b", packet id 10
    eq(mqtt.publish_packet("a/b", "hi", qos=1, pid=10), b"\x32\x09\x00\x03a/b\x00\x0ahi")


def test_publish_qos1_flags():
    eq(mqtt.publish_packet("a/b", "hi", 1, True, 10), b"\x33\x09\x00\x03a/b\x00\x0ahi")
    eq(mqtt.publish_packet("a/b", "hi", 1, False, 0x1234, True), b"\x3a\x09\x00\x03a/b\x12\x34hi")
    eq(mqtt.publish_packet("a/b", "hi", 1, True, 0xFFFF, True), b"\x3b\x09\x00\x03a/b\xff\xffhi")


def test_publish_rejects_bad_args():
    raises(ValueError, mqtt.publish_packet, "t", "m", 1, False, 0)  # QoS1 needs a packet id
    raises(ValueError, mqtt.publish_packet, "t", "m", 1, False, 65536)
    raises(ValueError, mqtt.publish_packet, "t", "m", 0, False, 0, True)  # MQTT-3.3.1-2
    raises(ValueError, mqtt.publish_packet, "t", "m", 3, False, 1)


def test_publish_utf8_topic_length_is_bytes():
    pkt = mqtt.publish_packet("t\u00e9", "x")
    eq(pkt, b"\x30\x06\x00\x03t\xc3\xa9x")


def test_publish_buffer_types_are_equivalent():
    want = mqtt.publish_packet("a/b", "payload", 1, False, 7)
    eq(mqtt.publish_packet(b"a/b", bytearray(b"payload"), 1, False, 7), want)
    eq(mqtt.publish_packet(memoryview(b"a/b"), memoryview(b"xpayload")[1:], 1, False, 7), want)


def test_publish_header_into_leaves_payload_out():
    buf = bytearray(32)
    n = mqtt.publish_header_into(buf, b"a/b", 200, 1, False, 5)
    # remaining length 2+3+2+200 = 207 -> 0xcf 0x01
    eq(bytes(buf[:n]), b"\x32\xcf\x01\x00\x03a/b\x00\x05")


# ---- remaining length (2.2.3) ----


def test_remaining_length_boundaries():
    # 2.2.3 table: 1..4 byte encodings at their limits. Header only (payload left out), so that
    # large lengths need no large buffers.
    buf = bytearray(16)
    for rl, enc in (
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    ):
        if rl >= 3:  # a QoS0 PUBLISH to "t" whose remaining length is rl: 2+1 topic bytes + payload
            n = mqtt.publish_header_into(buf, b"t", rl - 3)
            eq(bytes(buf[:n]), b"\x30" + enc + b"\x00\x01t", f"rl {rl}")
        eq(
            mqtt.decode_remaining_length(b"\x30" + enc + b"\x00"),
            (rl, 1 + len(enc)),
            f"decode {rl}",
        )
    raises(ValueError, mqtt.publish_header_into, buf, b"t", 268435455 - 2)


def test_remaining_length_whole_packets():
    for rl, enc in ((127, b"\x7f"), (128, b"\x80\x01"), (200, b"\xc8\x01")):
        pkt = mqtt.publish_packet("t", b"x" * (rl - 3))
        eq(pkt[: len(enc) + 4], b"\x30" + enc + b"\x00\x01t")
        eq(len(pkt), 1 + len(enc) + rl)


def test_remaining_length_decode_errors():
    raises(mqtt.MQTTError, mqtt.decode_remaining_length, b"\x30\xff\xff\xff\xff\x01")  # 5 bytes
    raises(mqtt.MQTTError, mqtt.decode_remaining_length, b"\x30\x80")  # truncated
    raises(mqtt.MQTTError, mqtt.decode_remaining_length, b"\x30")
    eq(mqtt.decode_remaining_length(b"\x30\x00"), (0, 2))


# ---- small packets ----


def test_puback():
    eq(mqtt.puback_packet(1), b"\x40\x02\x00\x01")
    eq(mqtt.puback_packet(0x1234), b"\x40\x02\x12\x34")
    eq(mqtt.puback_packet(65535), b"\x40\x02\xff\xff")
    raises(ValueError, mqtt.puback_packet, 0)
    raises(ValueError, mqtt.puback_packet, 65536)


def test_subscribe():
    # 3.8.1: fixed header 0x82 (reserved bits 0010); 3.8.3: topic filter + requested QoS byte
    eq(mqtt.subscribe_packet(1, "a/b", 1), b"\x82\x08\x00\x01\x00\x03a/b\x01")
    eq(mqtt.subscribe_packet(0x0102, b"x/#", 0), b"\x82\x08\x01\x02\x00\x03x/#\x00")
    raises(ValueError, mqtt.subscribe_packet, 0, "a", 1)


def test_pingreq_disconnect():
    eq(mqtt.pingreq_packet(), b"\xc0\x00")
    eq(mqtt.disconnect_packet(), b"\xe0\x00")


# ---- decoders ----


def split(pkt):
    # whole packet -> (flags nibble, body), checking the remaining length
    rl, off = mqtt.decode_remaining_length(pkt, 1)
    eq(off + rl, len(pkt), "remaining length")
    return pkt[0] & 0x0F, memoryview(pkt)[off:]


def test_decode_connack():
    # 3.2.2: acknowledge flags (bit 0 session present, others reserved), return code
    eq(mqtt.decode_connack(b"\x00\x00"), (False, 0))
    eq(mqtt.decode_connack(b"\x01\x00"), (True, 0))
    eq(mqtt.decode_connack(memoryview(b"\x20\x02\x00\x05")[2:]), (False, 5))
    for bad in (b"\x02\x00", b"\x00", b"\x00\x00\x00"):
        raises(mqtt.MQTTError, mqtt.decode_connack, bad)


def test_decode_puback():
    eq(mqtt.decode_puback(b"\x12\x34"), 0x1234)
    eq(mqtt.decode_puback(mqtt.puback_packet(65535)[2:]), 65535)
    raises(mqtt.MQTTError, mqtt.decode_puback, b"\x00\x01\x00")
    raises(mqtt.MQTTError, mqtt.decode_puback, b"\x01")


def test_decode_suback():
    # 3.9.3: one return code per topic filter: granted QoS, or 0x80 failure
    eq(mqtt.decode_suback(b"\x00\x07\x01"), (7, 1))
    eq(mqtt.decode_suback(b"\xab\xcd\x80"), (0xABCD, 0x80))
    raises(mqtt.MQTTError, mqtt.decode_suback, b"\x00\x01")


def test_decode_publish_qos0_retain():
    topic, msg, qos, retain, dup, pid = mqtt.decode_publish(*split(b"\x31\x07\x00\x03a/bhi"))
    eq((bytes(topic), bytes(msg), qos, retain, dup, pid), (b"a/b", b"hi", 0, True, False, 0))


def test_decode_publish_qos1_dup():
    topic, msg, qos, retain, dup, pid = mqtt.decode_publish(
        *split(b"\x3a\x09\x00\x03a/b\x00\x0ahi")
    )
    eq((bytes(topic), bytes(msg), qos, retain, dup, pid), (b"a/b", b"hi", 1, False, True, 10))


def test_decode_publish_roundtrip():
    for qos, retain, pid, dup, msg in (
        (0, False, 0, False, b""),
        (1, True, 65535, True, b"x" * 300),
        (1, False, 1, False, b'{"v": 1}'),
    ):
        pkt = mqtt.publish_packet("humigraph/home/kitchen-1/state", msg, qos, retain, pid, dup)
        t, m, q, r, d, p = mqtt.decode_publish(*split(pkt))
        eq(
            (bytes(t), bytes(m), q, r, d, p),
            (b"humigraph/home/kitchen-1/state", msg, qos, retain, dup, pid),
        )


def test_decode_publish_is_zero_copy():
    body = bytearray(b"\x00\x01t\x00\x09payload")
    topic, msg, qos, retain, dup, pid = mqtt.decode_publish(0x02, body)
    eq((bytes(topic), bytes(msg), qos, retain, dup, pid), (b"t", b"payload", 1, False, False, 9))
    body[5] = ord("P")
    eq(bytes(msg), b"Payload")  # a view into the receive buffer, not a copy


def test_decode_publish_malformed():
    bad = (
        (0, b"\x00\x09a/b"),  # topic length beyond the packet
        (2, b"\x00\x03a/b"),  # QoS1 without packet id
        (2, b"\x00\x03a/b\x00\x00"),  # packet id 0
        (6, b"\x00\x03a/bhi"),  # QoS 3
        (0, b"\x00"),
    )  # too short for a topic length
    for flags, body in bad:
        raises(mqtt.MQTTError, mqtt.decode_publish, flags, body)


def test_mqtterror():
    e = mqtt.MQTTError(5, "connection refused")
    eq(e.code, 5)
    eq(str(e), "connection refused (5)")
    eq(mqtt.MQTTError().code, -1)
    eq(mqtt.MQTTError(0x80, "subscription refused").code, 0x80)
    if not isinstance(e, Exception):
        raise AssertionError("MQTTError must be an Exception")


if __name__ == "__main__":
    _mpytest.main(globals())
