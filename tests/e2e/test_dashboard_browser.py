"""The dashboard in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium),
served by a real Gateway over a real Mosquitto, fed by MQTT publishes like a board's.

What a user sees: every board listed, a reading appearing without a reload, a status change, a
failed read marked, the banner when the gateway loses the broker; with the reasoner: the forecast
drawn ahead of the readings and an injected fault raising an alert on the page. Screenshots go to
test-output/.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from humigraph.gateway.service import Gateway
from paho.mqtt.enums import CallbackAPIVersion
from support.waiting import wait_until as support_wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SITE = "home"
BOARDS = ("bath-1", "kitchen-1", "living-1")


class Board:
    """Publishes as a board would: status (retained, the LWT's topic), meta, readings."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dashboard-test-boards")
        self._acked: set[int] = set()
        self._sent: list[int] = []
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        self.seq: dict[str, int] = {}

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            self._acked.add(mid)

    def publish(self, topic: str, body: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, body, qos=1, retain=retain)
        with self._lock:
            self._sent.append(info.mid)

    def status(self, dev: str, state: str) -> None:
        self.publish(f"humigraph/{SITE}/{dev}/status", state.encode(), retain=True)

    def meta(self, dev: str, **extra: Any) -> None:
        body = {"fw": "0.9.1", "sensor": "dht22", "pin": 4, "interval": 60, "buffered": 0}
        body.update(extra)
        self.publish(f"humigraph/{SITE}/{dev}/meta", json.dumps(body).encode(), retain=True)

    def reading(
        self, dev: str, t: float | None, rh: float | None, ts: float | None = None, err: str = ""
    ) -> None:
        seq = self.seq.get(dev, 0)
        self.seq[dev] = seq + 1
        ok = t is not None
        body = {"v": 1, "dev": dev, "boot": 1, "seq": seq, "ts": ts or time.time(),
                "up": seq * 60000, "t": t, "rh": rh, "ok": ok,
                "err": None if ok else (err or "timeout"), "sensor": "dht22"}  # fmt: skip
        self.publish(f"humigraph/{SITE}/{dev}/state", json.dumps(body).encode())

    def wait_acked(self, timeout: float = 10) -> None:
        wait_until(lambda: set(self._sent) <= self._acked, timeout, "the broker's PUBACKs")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    # an element being replaced while we look at it: look again
    return support_wait(pred, timeout, what, every=0.2, ignore=(Exception,))


def backfill(board: Board, minutes: int = 40) -> None:
    """History as a board's replayed buffer: one reading a minute, each board its own climate."""
    t0 = time.time() - minutes * 60
    for i in range(minutes):
        for k, dev in enumerate(BOARDS):
            board.reading(dev, 20.0 + k + 0.05 * i, 45.0 + 2 * k + 0.1 * i, ts=t0 + i * 60)
    board.wait_acked()


@pytest.fixture(scope="module")
def chrome_ok() -> None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed: run `make browser` "
            "(as root it runs apt-get install -y chromium chromium-driver)"
        )


@pytest.fixture
def browser(chrome_ok: None) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1600"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def board(broker: Any) -> Iterator[Board]:
    b = Board(broker.port)
    yield b
    b.close()


def js_errors(driver: Any) -> list[str]:
    """Script errors in the page (a 404 of an optional endpoint is a network entry, not this)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and e.get("source") == "javascript"
    ]


def card_text(driver: Any, dev: str, css: str) -> str:
    return driver.execute_script(
        "var c = document.querySelector(arguments[0]);"
        "var e = c && c.querySelector(arguments[1]); return e ? e.textContent : null;",
        f'article.board[data-dev="{dev}"]',
        css,
    )


def start_page(driver: Any, gw: Gateway) -> None:
    host, port = gw.http_address or ("", 0)
    driver.get(f"http://{host}:{port}/")
    wait_until(
        lambda: driver.execute_script("return HG.state.streamState") == "live",
        20,
        "the page's live stream",
    )


def screenshot(driver: Any, name: str) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / name
    driver.save_screenshot(str(path))
    return path


def test_boards_are_listed_and_update_live_and_broker_loss_shows(
    broker: Any, board: Board, browser: Any, tmp_path: Path
) -> None:
    with Gateway(broker.url, f"sqlite:///{tmp_path / 'gw.db'}", http="127.0.0.1:0") as gw:
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)  # SUBACK
        for dev in BOARDS:
            board.status(dev, "online")
            board.meta(dev)
        backfill(board)
        wait_until(
            lambda: gw.queue_depth() == 0 and gw.metrics.readings_stored >= 120, 15, "the commits"
        )

        start_page(browser, gw)
        # every board has a card with its latest reading and meta
        cards = wait_until(
            lambda: (
                browser.execute_script(
                    "return Array.from(document.querySelectorAll('article.board'))"
                    ".map(function (c) { return c.dataset.dev; })"
                )
                == list(BOARDS)
            ),
            10,
            "a card per board",
        )
        assert cards
        # a live event can draw the cards from the device list before the readings' fetch
        # returns ("– °C" for a moment): wait for the latest reading, do not sample the race
        latest = f"{22.0 + 0.05 * 39:.1f} °C"
        wait_until(
            lambda: card_text(browser, "living-1", ".t-value") == latest,
            10,
            f"living-1's card to show its latest reading {latest}",
        )
        assert card_text(browser, "kitchen-1", "[data-key=firmware] dd") == "0.9.1"
        # the history is drawn in both charts of every board
        assert browser.execute_script(
            "return document.querySelectorAll('article.board svg.chart path.hist').length"
        ) == 2 * len(BOARDS)
        # ...and the boards are on the site view
        nodes = browser.execute_script(
            "return Array.from(document.querySelectorAll('#graph .node'))"
            ".map(function (n) { return n.dataset.dev; }).sort()"
        )
        assert nodes == sorted(BOARDS)

        # A new reading appears without a reload (a marker set on this page must survive).
        browser.execute_script("window.__sameLoad = 42")
        board.reading("kitchen-1", 27.3, 61.2)
        wait_until(
            lambda: card_text(browser, "kitchen-1", ".t-value") == "27.3 °C", 10, "the new reading"
        )
        assert card_text(browser, "kitchen-1", ".rh-value") == "61.2 %RH"
        assert browser.execute_script("return window.__sameLoad") == 42

        # A failed read is marked on the chart, and 4 readings that never arrived are a gap;
        # a status change and fresh meta show at once.
        board.reading("bath-1", None, None, err="checksum")
        board.seq["kitchen-1"] += 4
        board.reading("kitchen-1", 27.0, 61.0)
        board.status("living-1", "offline")
        board.meta("bath-1", rssi=-71, buffered=12)
        wait_until(
            lambda: (
                browser.execute_script(
                    "return document.querySelectorAll("
                    "'article.board[data-dev=\"bath-1\"] svg.chart.t path.failed').length"
                )
                == 1
            ),
            10,
            "the failed read's mark",
        )
        assert "checksum" in card_text(browser, "bath-1", ".reading-info")
        wait_until(
            lambda: (
                browser.execute_script(
                    "return document.querySelector('article.board[data-dev=\"living-1\"]')"
                    ".dataset.online"
                )
                == "false"
            ),
            10,
            "living-1 shown offline",
        )
        wait_until(
            lambda: card_text(browser, "bath-1", "[data-key=rssi] dd") == "-71 dBm", 10, "rssi"
        )
        assert card_text(browser, "bath-1", "[data-key=buffered] dd") == "12"
        gap = wait_until(
            lambda: browser.execute_script(
                "var r = document.querySelector("
                "'article.board[data-dev=\"kitchen-1\"] svg.chart.t rect.gap title');"
                "return r ? r.textContent : null"
            ),
            10,
            "the gap's mark",
        )
        assert gap == "4 readings missing"
        wait_until(
            lambda: card_text(browser, "kitchen-1", "[data-key=gaps] dd") == "4", 10, "gaps 4"
        )
        banner = browser.find_element("id", "banner")
        assert not banner.is_displayed()
        screenshot(browser, "dashboard-live.png")

        # The gateway loses the broker: a clear banner (from the broker event or /healthz).
        broker.stop()
        wait_until(lambda: banner.is_displayed(), 20, "the broker-loss banner")
        assert "lost the MQTT broker" in banner.text
        screenshot(browser, "dashboard-broker-lost.png")
        broker.start()
        wait_until(lambda: not banner.is_displayed(), 30, "the banner to go once reconnected")
        assert js_errors(browser) == []


def test_a_phone_sized_screen_keeps_everything_reachable(
    broker: Any, board: Board, browser: Any, tmp_path: Path
) -> None:
    browser.set_window_size(390, 844)  # a phone in portrait
    with Gateway(broker.url, f"sqlite:///{tmp_path / 'gw.db'}", http="127.0.0.1:0") as gw:
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)
        for dev in BOARDS:
            board.status(dev, "online")
        backfill(board, minutes=10)
        start_page(browser, gw)
        wait_until(
            lambda: len(browser.find_elements("css selector", "article.board")) == 3, 10, "cards"
        )
        # one column, nothing wider than the screen (no sideways scrolling)
        widths = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
            ".concat(Array.from(document.querySelectorAll('article.board'))"
            ".map(function (c) { return c.getBoundingClientRect().right; }))"
        )
        scroll_w, inner_w, *rights = widths
        assert scroll_w <= inner_w, f"the page scrolls sideways: {scroll_w} > {inner_w}"
        assert all(r <= inner_w for r in rights)
        lefts = browser.execute_script(
            "return Array.from(document.querySelectorAll('article.board'))"
            ".map(function (c) { return Math.round(c.getBoundingClientRect().left); })"
        )
        assert len(set(lefts)) == 1, f"cards are not in one column: {lefts}"
        screenshot(browser, "dashboard-phone.png")
        assert js_errors(browser) == []


def test_the_page_reconnects_by_itself_after_a_gateway_restart(
    broker: Any, board: Board, browser: Any, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    gw = Gateway(broker.url, db, http="127.0.0.1:0").start()
    try:
        host, port = gw.http_address or ("", 0)
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)
        board.status("kitchen-1", "online")
        board.reading("kitchen-1", 21.0, 40.0)
        start_page(browser, gw)
        wait_until(lambda: card_text(browser, "kitchen-1", ".t-value") == "21.0 °C", 10, "reading")
        browser.execute_script("window.__sameLoad = 7")
        gw.stop()  # ends the page's stream: it must notice, say so, and keep trying
        banner = browser.find_element("id", "banner")
        wait_until(lambda: banner.is_displayed(), 20, "a banner while the gateway is away")
        assert browser.execute_script("return HG.state.streamState") != "live"
        board.reading("kitchen-1", 24.2, 44.0)  # stored by the next gateway (persistent session)
        gw = Gateway(broker.url, db, http=f"{host}:{port}").start()
        wait_until(
            lambda: browser.execute_script("return HG.state.streamState") == "live",
            30,
            "the stream back without a reload",
        )
        wait_until(
            lambda: card_text(browser, "kitchen-1", ".t-value") == "24.2 °C", 15, "the new reading"
        )
        wait_until(lambda: not banner.is_displayed(), 15, "the banner to go")
        assert browser.execute_script("return window.__sameLoad") == 7
    finally:
        gw.stop()


def test_several_sites_each_get_their_own_view(
    broker: Any, board: Board, browser: Any, tmp_path: Path
) -> None:
    with Gateway(broker.url, f"sqlite:///{tmp_path / 'gw.db'}", http="127.0.0.1:0") as gw:
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)
        board.status("kitchen-1", "online")
        board.reading("kitchen-1", 21.0, 40.0)
        lab = {"v": 1, "dev": "bench-1", "boot": 1, "seq": 0, "ts": time.time(), "up": 0,
               "t": 19.5, "rh": 35.0, "ok": True, "err": None, "sensor": "dht22"}  # fmt: skip
        board.publish("humigraph/lab/bench-1/state", json.dumps(lab).encode())
        board.wait_acked()
        start_page(browser, gw)
        buttons = wait_until(
            lambda: [b.text for b in browser.find_elements("css selector", "#sites button")],
            10,
            "a button per site",
        )
        assert buttons == ["home", "lab"]

        def shown() -> list[str]:
            return [
                c.get_attribute("data-dev")
                for c in browser.find_elements("css selector", "article.board")
            ]

        assert shown() == ["kitchen-1"]
        browser.find_elements("css selector", "#sites button")[1].click()
        wait_until(lambda: shown() == ["bench-1"], 5, "the lab's boards")
        assert browser.find_element("id", "site-name").text == "lab"
        wait_until(
            lambda: card_text(browser, "bench-1", ".t-value") == "19.5 °C", 10, "bench-1's reading"
        )


def test_forecast_is_drawn_and_an_injected_fault_raises_an_alert(
    broker: Any, board: Board, browser: Any, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow", reason="building the tiny test model needs TensorFlow")
    from support.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
    gw = Gateway(
        broker.url,
        f"sqlite:///{tmp_path / 'gw.db'}",
        http="127.0.0.1:0",
        model=model,
        infer_interval=1.0,
        # a stuck sensor after 6 identical readings (60 by default), so the test is short
        alerts={"stuck_readings": 6, "min_hold_s": 1},
    )
    with gw:
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)
        for dev in BOARDS:
            board.status(dev, "online")
            board.meta(dev)
        backfill(board)
        start_page(browser, gw)
        # The model runs: its forecast is drawn ahead of the readings on every board.
        wait_until(
            lambda: (
                browser.execute_script(
                    "return document.querySelectorAll('article.board svg.chart path.forecast').length"
                )
                == 2 * len(BOARDS)
            ),
            30,
            "the forecast drawn on every chart",
        )
        points = browser.execute_script(
            "return document.querySelectorAll("
            "'article.board[data-dev=\"kitchen-1\"] svg.chart.t circle.forecast-pt').length"
        )
        assert points == 3  # +5, +15 and +30 min
        model_pill = browser.find_element("id", "model").text
        assert "tiny-test" in model_pill
        # The learned graph is drawn: one line per linked pair of boards, as /api/insight has it,
        # the strongest link the thickest.
        host, port = gw.http_address or ("", 0)
        with urllib.request.urlopen(f"http://{host}:{port}/api/insight?site={SITE}") as r:
            edges = json.loads(r.read())["graph"]["edges"]
        pairs: dict[tuple[str, ...], float] = {}
        for e in edges:
            if e["from"] != e["to"] and e["weight"] > 0:
                key = tuple(sorted((e["from"], e["to"])))
                pairs[key] = max(pairs.get(key, 0.0), e["weight"])
        drawn = (
            wait_until(
                lambda: browser.execute_script(
                    "return Array.from(document.querySelectorAll('#graph .edge')).map(function (l) {"
                    " return [l.dataset.a, l.dataset.b, +l.getAttribute('stroke-width')]; })"
                ),
                10,
                "the learned links",
            )
            if pairs
            else []
        )
        assert sorted((a, b) for a, b, _ in drawn) == sorted(pairs)
        if len(pairs) > 1:
            widest = max(drawn, key=lambda d: d[2])
            assert pairs[(widest[0], widest[1])] == max(pairs.values())

        # Inject a fault: bath-1 stuck at one value while the others move on.
        for i in range(8):
            board.reading("bath-1", 23.4, 55.5)
            board.reading("kitchen-1", 21.0 + 0.1 * i, 47.0 + 0.2 * i)
            time.sleep(0.2)
        alert = wait_until(
            lambda: browser.execute_script(
                "var a = document.querySelector('#alerts li[data-dev=\"bath-1\"][data-kind=stuck]');"
                "return a ? {text: a.textContent, cls: a.className} : null"
            ),
            30,
            "the stuck-sensor alert on the page",
        )
        assert "warning" in alert["cls"]
        assert "stuck" in alert["text"].lower() and "23.4" in alert["text"]
        badge = browser.execute_script("return document.querySelector('#alert-count').textContent")
        assert badge.startswith(("1 active", "2 active", "3 active"))
        screenshot(browser, "dashboard-model-alert.png")
        assert js_errors(browser) == []


def test_without_the_model_endpoints_the_page_says_no_model_yet(
    broker: Any, board: Board, browser: Any, tmp_path: Path
) -> None:
    """A gateway without the reasoning endpoints (404): "no model yet", the rest still works."""
    with Gateway(broker.url, f"sqlite:///{tmp_path / 'gw.db'}", http="127.0.0.1:0") as gw:
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)
        # Before the page loads, make those endpoints answer 404 as an older gateway does.
        browser.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            {
                "source": """
                var realFetch = window.fetch;
                window.fetch = function (url, opts) {
                  if (/^\\/api\\/(sites|forecast|health|insight|alerts)/.test(url)) {
                    return Promise.resolve(new Response('{"error": "no such endpoint"}',
                      {status: 404, headers: {"Content-Type": "application/json"}}));
                  }
                  return realFetch(url, opts);
                };"""
            },
        )
        board.status("kitchen-1", "online")
        board.reading("kitchen-1", 21.5, 40.0)
        board.wait_acked()
        start_page(browser, gw)
        wait_until(
            lambda: card_text(browser, "kitchen-1", ".t-value") == "21.5 °C", 10, "the reading"
        )
        assert browser.find_element("id", "model").text == "no model yet"
        assert card_text(browser, "kitchen-1", ".health-badge") == "no model yet"
        assert browser.find_elements("css selector", "#insight .no-model")
        assert "No alert engine yet" in browser.find_element("id", "alerts").text
        # still live without them
        board.reading("kitchen-1", 22.5, 41.0)
        wait_until(
            lambda: card_text(browser, "kitchen-1", ".t-value") == "22.5 °C", 10, "a live update"
        )
        assert js_errors(browser) == []
