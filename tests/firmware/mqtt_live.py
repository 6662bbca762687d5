# MQTTClient against a real broker; driven by tests/host/test_firmware_mqtt.py, which reads the
# lines printed here and kills/freezes/restarts the broker in between.
#
#     micropython [-X heapsize=64K] tests/firmware/mqtt_live.py PORT MODE TAG
#
# MODE pipeline: connect (will, keepalive 2 s), subscribe, publish 50 QoS1 messages pipelined, wait
#   for every PUBACK and every echo; print "READY"; print "DOWN <ms>" once the connection is lost;
#   then retry connect() until the broker is back, publish one message, print "RECONNECTED".
# MODE tls: the pipeline over TLS (ssl=True, no certificate check), ending after "READY".
# MODE will / clean: connect with a will, publish "online", then close() (abrupt: the broker must
#   send the will) or disconnect() (clean: it must not); print "CLOSED" and stay alive 2 s.
import sys

sys.path.append((__file__.rpartition("/")[0] or ".") + "/../../firmware")
if ".frozen" not in sys.path:
    sys.path.append(".frozen")

import asyncio
import gc
import time

import humigraph.mqtt
from humigraph.mqtt import MQTTClient

print("MODULE", humigraph.mqtt.__file__)

PORT, MODE, TAG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
N = 50


def log(lvl, tag, msg):
    print("LOG", lvl, tag, msg)


def payload(i):
    return '{"seq": ' + str(i) + ', "t": 21.5}'


def fail(why):
    print("FAIL", why)
    sys.exit(1)


async def until(cond, ms):
    t0 = time.ticks_ms()
    while not cond():
        if time.ticks_diff(time.ticks_ms(), t0) > ms:
            return False
        await asyncio.sleep_ms(10)
    return True


async def pipeline():
    c = MQTTClient(
        "live-" + TAG,
        "127.0.0.1",
        PORT,
        keepalive=2,
        log=log,
        will=(f"hgtest/{TAG}/status", "offline", True, 1),
        ssl=MODE == "tls",
    )
    acked = []
    got = []
    c.on_puback = acked.append
    c.on_message = lambda t, m, r: got.append(m)
    await c.connect(5000)
    await c.subscribe(f"hgtest/{TAG}/echo", 1)
    gc.collect()
    t0 = time.ticks_ms()
    pids = []
    for i in range(N):
        pids.append(await c.publish(f"hgtest/{TAG}/echo", payload(i), qos=1))
    if not await until(lambda: len(acked) == N and len(got) == N, 5000):
        fail(f"acked {len(acked)}, received {len(got)} of {N}")
    if sorted(acked) != sorted(pids) or len(set(pids)) != N:
        fail(f"PUBACK pids {acked!r} != published {pids!r}")
    if got != [payload(i).encode() for i in range(N)]:
        fail("echoed payloads out of order or wrong")
    ms = time.ticks_diff(time.ticks_ms(), t0)
    gc.collect()
    free = gc.mem_free()
    print(f"PIPELINE acked={len(acked)} received={len(got)} inflight={c.inflight()} ms={ms}")
    print(f"HEAP free={free} total={free + gc.mem_alloc()} (after gc.collect)")
    print("READY")
    if MODE == "tls":
        await c.disconnect()
        return
    t0 = time.ticks_ms()
    try:
        await asyncio.wait_for_ms(c.wait_down(), 15000)
    except asyncio.TimeoutError:
        fail("wait_down did not return")
    print("DOWN", time.ticks_diff(time.ticks_ms(), t0))
    for _ in range(100):  # the app's reconnect loop, minus the backoff
        try:
            await c.connect(1000)
            break
        except OSError:
            await asyncio.sleep_ms(100)
    else:
        fail("no reconnect")
    n = len(acked)
    await c.publish(f"hgtest/{TAG}/echo", "again", qos=1)
    if not await until(lambda: len(acked) == n + 1, 3000):
        fail("no PUBACK after reconnect")
    print("RECONNECTED")
    await c.disconnect()


async def will(clean):
    c = MQTTClient(
        "will-" + TAG,
        "127.0.0.1",
        PORT,
        keepalive=10,
        log=log,
        will=(f"hgtest/{TAG}/status", "offline", True, 1),
    )
    await c.connect(5000)
    await c.publish(f"hgtest/{TAG}/status", "online", retain=True, qos=1)
    if not await until(lambda: c.inflight() == 0, 3000):
        fail("no PUBACK for online")
    if clean:
        await c.disconnect()
    else:
        c.close()
    print("CLOSED", c.isconnected())
    await asyncio.sleep(2)  # stay alive: the will must come from close(), not process exit


asyncio.run(pipeline() if MODE in ("pipeline", "tls") else will(MODE == "clean"))
print("EXIT")
