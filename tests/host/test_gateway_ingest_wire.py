"""The gateway's fast MQTT read path (ingest._Client): PUBLISH packets parsed straight from the
socket buffer must give exactly what paho would, however TCP cuts the stream."""

from __future__ import annotations

import random
import socket

import paho.mqtt.client as mqtt
import pytest
from humigraph.gateway.ingest import _BufferedSocket, _Client, _varint
from paho.mqtt.enums import CallbackAPIVersion


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str, payload: bytes, qos: int, mid: int, props: bytes = b"") -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t
    if qos:
        body += mid.to_bytes(2, "big")
    body += varint(len(props)) + props + payload
    return bytes([0x30 | qos << 1]) + varint(len(body)) + body


def test_varint() -> None:
    for n in (0, 1, 127, 128, 16383, 16384, 2_097_151, 268_435_455):
        enc = varint(n)
        assert _varint(b"\x00" + enc + b"\xff", 1, len(enc) + 2) == (n, 1 + len(enc))
    assert _varint(b"\x80\x80", 0, 2) == (0, -1)  # cut short
    assert _varint(b"\xff\xff\xff\xff\x01", 0, 5) == (0, -1)  # longer than 4 bytes


@pytest.mark.parametrize("seed", range(5))
def test_publishes_cut_anywhere_are_all_delivered_in_order(seed: int) -> None:
    rng = random.Random(seed)
    msgs = []
    for i in range(400):
        size = rng.choice((0, 1, 50, 200, 3000, 20000))
        payload = bytes(rng.randrange(256) for _ in range(size))
        props = b"\x23\x00\x05" if i % 7 == 0 else b""  # a property the reader must skip
        msgs.append(
            (f"humigraph/home/dev-{i % 13}/state", payload, 0 if i % 5 == 0 else 1, i + 1, props)
        )
    msgs.append(("humigraph/home/x/status", b"online", 0, 0, b""))
    stream = b"".join(publish(t, p, q, m, pr) for t, p, q, m, pr in msgs)

    a, b = socket.socketpair()
    c = _Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=True)
    got: list[tuple[str, bytes, int, int]] = []
    c.on_raw_message = got.extend  # a list of (topic, payload, mid, qos) per call
    a.setblocking(False)
    c._sock = _BufferedSocket(a)
    try:
        pos = 0
        while pos < len(stream):
            n = rng.choice((1, 2, 3, 7, 100, 1500, 65536))
            b.sendall(stream[pos : pos + n])
            pos += n
            assert c.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        for _ in range(50):
            c.loop_read()
    finally:
        c._sock = None
        a.close()
        b.close()
    assert got == [(t, p, m if q else 0, q) for t, p, q, m, _ in msgs]


def test_ack_many_writes_one_puback_per_message() -> None:
    c = _Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=True)
    c.ack_many([1, 258, 65535])
    pkt = c._out_packet[-1]["packet"]
    assert pkt == b"\x40\x02\x00\x01" + b"\x40\x02\x01\x02" + b"\x40\x02\xff\xff"
