"""The dashboard's HTTP side (gateway/web.py) through a real ApiServer: static files, the SSE
stream's framing, keepalives, drop notices, and that stopping the server ends open streams."""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from humigraph.gateway import store as st
from humigraph.gateway.api import ApiServer
from humigraph.gateway.events import EventBus
from humigraph.gateway.web import EventStreams, format_event, to_json


@pytest.fixture
def bus() -> EventBus:
    return EventBus(maxsize=5)


@pytest.fixture
def server(tmp_path: Path, bus: EventBus) -> Iterator[ApiServer]:
    db = tmp_path / "gw.db"
    st.Store(db).close()  # the schema, so the API's readers can open it
    api = ApiServer(
        db,
        "127.0.0.1",
        0,
        status=lambda: {"ok": True, "broker": "connected"},
        metrics_text=lambda conn: "",
        events=bus,
    )
    api.streams.keepalive = 0.3  # so the test sees a keepalive quickly
    api.start()
    try:
        yield api
    finally:
        api.stop()


def url(api: ApiServer, path: str) -> str:
    host, port = api.address
    return f"http://{host}:{port}{path}"


def open_stream(api: ApiServer) -> http.client.HTTPResponse:
    host, port = api.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/api/events")
    return conn.getresponse()


def read_block(resp: http.client.HTTPResponse) -> list[str]:
    """One SSE block: the lines up to the blank line that ends it."""
    lines = []
    while True:
        line = resp.readline().decode()
        assert line, "the stream ended"
        if line == "\n":
            return lines
        lines.append(line.rstrip("\n"))


def wait_for(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_root_serves_the_dashboard_and_its_files(server: ApiServer) -> None:
    with urllib.request.urlopen(url(server, "/")) as r:
        page = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html")
    # every file the page links to is served, with a type the browser accepts
    for ref, ctype in (("/ui/app.css", "text/css"), ("/ui/app.js", "text/javascript")):
        assert ref in page
        with urllib.request.urlopen(url(server, ref)) as r:
            assert r.headers["Content-Type"].startswith(ctype)
            assert len(r.read()) > 100
    assert "/ui/charts.js" in page


@pytest.mark.parametrize("path", ["/ui/../api.py", "/ui/nope.js", "/ui/%2e%2e/web.py", "/ui/"])
def test_unknown_or_escaping_dashboard_paths_are_404(server: ApiServer, path: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url(server, path))
    assert e.value.code == 404
    assert "error" in json.loads(e.value.read())


def test_the_stream_carries_bus_events_with_ids_and_kinds(server: ApiServer, bus: EventBus) -> None:
    resp = open_stream(server)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    hello = read_block(resp)
    assert hello[0] == "retry: 3000" and hello[1] == "event: hello"
    assert abs(json.loads(hello[2][len("data: ") :])["server_time"] - time.time()) < 5
    wait_for(lambda: bus.subscribers == 1)
    bus.publish("reading", {"dev": "kitchen-1", "seq": 7, "t": 21.5})
    bus.publish("broker", {"state": "disconnected"})
    first, second = read_block(resp), read_block(resp)
    assert first[1:] == ["event: reading", 'data: {"dev": "kitchen-1", "seq": 7, "t": 21.5}']
    assert second[1:] == ["event: broker", 'data: {"state": "disconnected"}']
    assert int(second[0][len("id: ") :]) == int(first[0][len("id: ") :]) + 1
    # idle: a keepalive comment keeps proxies and the browser from timing out
    assert resp.readline().decode() == ": keepalive\n"
    resp.close()
    wait_for(lambda: server.streams.active == 0 and bus.subscribers == 0)


class FakeHandler:
    """Just what EventStreams writes to: headers and a byte sink."""

    def __init__(self) -> None:
        self.wfile = io.BytesIO()
        self.connection = self
        self.status = 0

    def settimeout(self, t: float) -> None:
        pass

    def send_response(self, code: int) -> None:
        self.status = code

    def send_header(self, k: str, v: str) -> None:
        pass

    def end_headers(self) -> None:
        pass


def test_a_slow_client_is_told_how_many_events_it_lost() -> None:
    bus = EventBus(maxsize=5)
    streams = EventStreams(bus, poll=0.05)
    sub = bus.subscribe()
    for i in range(12):  # the client fell behind: its queue keeps the newest 5
        bus.publish("reading", {"seq": i})
    h = FakeHandler()
    threading.Timer(0.5, streams.close).start()
    streams._stream(h, sub)  # type: ignore[arg-type]
    blocks = [b.split("\n") for b in h.wfile.getvalue().decode().split("\n\n") if b]
    assert h.status == 200 and blocks[0][1] == "event: hello"
    assert blocks[1] == ["event: dropped", 'data: {"dropped": 7}']
    assert [json.loads(b[2][len("data: ") :])["seq"] for b in blocks[2:]] == [7, 8, 9, 10, 11]


def test_stopping_the_server_ends_open_streams(tmp_path: Path, bus: EventBus) -> None:
    db = tmp_path / "gw.db"
    st.Store(db).close()
    api = ApiServer(db, "127.0.0.1", 0, status=lambda: {}, metrics_text=lambda conn: "", events=bus)
    api.start()
    streams = [open_stream(api) for _ in range(3)]
    for s in streams:
        read_block(s)
    wait_for(lambda: api.streams.active == 3)
    t0 = time.monotonic()
    api.stop()
    assert time.monotonic() - t0 < 3
    assert api.streams.active == 0 and bus.subscribers == 0
    for s in streams:  # each sees the end of its stream (no hanging reader)
        got = threading.Event()

        def drain(s: http.client.HTTPResponse = s, got: threading.Event = got) -> None:
            while s.readline():
                pass
            got.set()

        threading.Thread(target=drain, daemon=True).start()
        assert got.wait(5)


def test_without_a_bus_the_stream_answers_503(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    st.Store(db).close()
    api = ApiServer(db, "127.0.0.1", 0, status=lambda: {}, metrics_text=lambda conn: "")
    api.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url(api, "/api/events"))
        assert e.value.code == 503
        assert "live events are not available" in json.loads(e.value.read())["error"]
    finally:
        api.stop()


def test_event_data_is_json_a_browser_parses() -> None:
    block = format_event(3, "forecast", {"t": [float("nan"), 1.5], "note": "a\nb"})
    lines = block.split("\n")
    assert lines[:2] == ["id: 3", "event: forecast"] and block.endswith("\n\n")
    assert json.loads(lines[2][len("data: ") :]) == {"t": [None, 1.5], "note": "a\nb"}
    assert to_json({"x": float("inf")}) == '{"x": null}'
