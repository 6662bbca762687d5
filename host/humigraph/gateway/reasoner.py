"""The reasoner: per site, the model over the last window of readings, and the alert rules.

Every ``infer_interval`` seconds (default: the model card's ``step_s``) and for each site, the
readings of the last ``card.window_s`` go onto the model's grid (``features.window``, node slots in
sorted device-id order, at most ``card.nodes``), the INT8 model runs through ``humigraph.runtime``
and the gateway publishes, retained QoS 1:

- ``<prefix>/<site>/<dev>/forecast``  t and rh at each horizon of the card;
- ``<prefix>/<site>/<dev>/health``    fault class and probabilities, top neighbours, router weights
  (not for a board silent for two steps or more, nor one reading less often than the model's
  grid: see ``_judgeable``; its last health stays retained);
- ``<prefix>/<site>/insight``         occupancy, ventilation, router weights, the learned graph.

The alert rules (alerts.py) run every tick (at most every 10 s) with or without a model; events
go to ``<prefix>/<site>/alerts`` (QoS 1, not retained) and a retained per-device summary to
``<prefix>/<site>/<dev>/alert``. Everything is stored (derived.py) and put on the event bus.

The model file is watched: when its (or its card's) mtime or size changes it is loaded again; a
file that fails to load leaves the previous model running (the reason is logged and shown in
/healthz). With no model the gateway still ingests and the rules still run. Nothing here may stop
the gateway: errors are counted and logged at a bounded rate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..model.card import SPARSE_STEPS, card_path, load_card
from ..model.features import decode_forecast, window
from . import derived, discovery
from .alerts import Alert, AlertConfig, AlertEngine, DeviceView, Sample
from .events import EventBus
from .metrics import Metrics
from .ratelog import RateLimitedLog
from .store import Store

log = logging.getLogger(__name__)

REPO_MODEL = Path(__file__).resolve().parents[3] / "models" / "humigraph-int8.tflite"
MAX_TICK_S = 10.0  # the alert rules run at least this often
YIELD_EVERY = 16  # devices read per burst in a pass, then a pause for the ingest thread:
YIELD_S = 0.002  # at least this long,
YIELD_MAX_S = 0.2  # at most this long; in between, spread over half the tick (see tick())
PRUNE_EVERY_S = 3600.0
SILENT_STEPS = 2  # a board with no read in this many model steps gets no fault verdict

Publish = Callable[[str, bytes, bool], None]  # (topic, payload, retain); QoS 1


def default_model() -> Path | None:
    """``models/humigraph-int8.tflite`` of this checkout when it exists."""
    return REPO_MODEL if REPO_MODEL.is_file() else None


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """(mtime_ns, size) of the model and of its card; None when the model file is missing."""
    try:
        m = path.stat()
    except OSError:
        return None
    try:
        c = card_path(path).stat()
        card = (c.st_mtime_ns, c.st_size)
    except OSError:
        card = (0, -1)
    return (m.st_mtime_ns, m.st_size, *card)


class ModelWatcher:
    """The loaded model, reloaded when its file changes; a failed load keeps the old one."""

    def __init__(self, path: Path | str | None, threads: int = 1) -> None:
        self.path = Path(path) if path is not None else None
        self.threads = threads
        self.runtime: Any = None  # humigraph.runtime.Runtime
        self.error: str | None = None  # why no model, or why the last load failed
        self.loaded_at: float | None = None
        self.reloads = 0
        self._sig: tuple[int, int, int, int] | None = None
        self._checked = False
        self._private: Path | None = None  # the directory holding the loaded copy
        if self.path is None:
            self.error = "no model configured (--model PATH)"
            log.warning("reasoning off: no model configured (--model PATH); alert rules still run")

    def check(self) -> bool:
        """Loads the model if its files changed since the last call; True when a new one loaded."""
        if self.path is None:
            return False
        sig = _signature(self.path)
        first = not self._checked
        self._checked = True
        if sig == self._sig and not first:
            return False
        self._sig = sig
        if sig is None:
            self.error = f"{self.path}: no such model file"
            if self.runtime is None:
                log.warning(
                    "reasoning off: model %s not found (make quantize builds one); alert rules "
                    "still run, and the model is loaded when the file appears",
                    self.path,
                )
            else:
                log.warning("model %s disappeared; keeping the one loaded", self.path)
            return False
        try:
            rt, private = self._load(self.path)
        except ModelError as e:
            self.error = str(e)
            if self.runtime is None:
                log.warning("reasoning off: %s", e)
            else:
                log.warning(
                    "model %s changed but does not load (%s); keeping %s",
                    self.path,
                    e,
                    self.runtime.card.model_id,
                )
            return False
        except Exception as e:  # an interpreter crash on a corrupt file is not a ModelError
            self.error = f"{self.path}: cannot load the model: {e}"
            log.warning("model %s does not load (%s); keeping the previous one", self.path, e)
            return False
        old = self.runtime
        self.runtime = rt
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
        self._private = private
        self.error = None
        self.loaded_at = time.time()
        if old is not None:
            self.reloads += 1
        log.info(
            "reasoning on: model %s (%s) loaded from %s with %s",
            rt.card.model_id,
            "reloaded" if old is not None else "first load",
            self.path,
            rt.backend,
        )
        return True

    def _load(self, path: Path) -> tuple[Any, Path]:
        """Loads a private copy: the interpreter maps its file, and an operator overwriting the
        model in place (cp new.tflite models/...) must not change the bytes under a running model.
        """
        from ..runtime import Runtime  # numpy + LiteRT only; no TensorFlow on this path

        card = load_card(path)  # read into memory, errors name the operator's file
        private = Path(tempfile.mkdtemp(prefix="humigraph-model-"))
        try:
            copy = private / path.name
            try:
                shutil.copyfile(path, copy)
            except OSError as e:
                raise ModelError(f"{path}: cannot read the model: {e}") from None
            try:
                return Runtime(copy, card=card, threads=self.threads), private
            except ModelError as e:
                raise ModelError(str(e).replace(str(copy), str(path))) from None
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise

    def close(self) -> None:
        self.runtime = None
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None


class Reasoner:
    """Runs in its own thread (:meth:`start`/:meth:`stop`); :meth:`tick` is one pass (tests)."""

    def __init__(
        self,
        store: Store,
        *,
        model: Path | str | None = None,
        metrics: Metrics | None = None,
        publish: Publish | None = None,
        events: EventBus | None = None,
        prefix: str = "humigraph",
        alerts: AlertConfig | Mapping[str, Any] | None = None,
        infer_interval: float | None = None,
        ha_discovery: bool = True,
        ha_prefix: str = "homeassistant",
        edge_threshold: float = 0.1,
        history_days: float = 7.0,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.publish_fn = publish
        self.events = events
        self.prefix = prefix
        self.cfg = alerts if isinstance(alerts, AlertConfig) else AlertConfig.from_mapping(alerts)
        self.engine = AlertEngine(self.cfg)
        self.infer_interval_set = infer_interval
        self.ha_discovery = ha_discovery
        self.ha_prefix = ha_prefix
        self.edge_threshold = edge_threshold
        self.history_days = history_days
        # > 1 when the boards' world runs faster than the clock (the demo's simulated house):
        # the model's grid step then spans step_s / time_scale seconds of readings, so it sees
        # the dynamics it was trained on. Horizons stay in the model's (world) seconds.
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self.clock = clock
        self.watcher = ModelWatcher(model)
        # Silence is counted from here at the earliest: after the gateway was down, the broker's
        # backlog arrives in the first seconds, and boards are not "offline" meanwhile.
        self.started = clock()
        self.last_inference: float | None = None
        self.inference_errors = 0
        self.ticks = 0
        self._last_pruned = 0.0
        self._discovered: dict[str, tuple[Any, ...]] = {}
        self._site_discovered: dict[str, tuple[Any, ...]] = {}
        self._alert_summary: dict[str, tuple[Any, ...]] = {}
        self._truncated_logged: set[str] = set()
        self._errlog = RateLimitedLog(log, period=30.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._restored = False
        self._pause = YIELD_S

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def infer_interval(self) -> float:
        if self.infer_interval_set:
            return float(self.infer_interval_set)
        rt = self.watcher.runtime
        return float(rt.card.step_s) if rt is not None else 60.0

    @property
    def tick_s(self) -> float:
        return max(0.2, min(MAX_TICK_S, self.infer_interval))

    def start(self) -> None:
        self._check_model()  # before the thread: the caller can report the model at once
        self._thread = threading.Thread(target=self._run, name="gateway-reasoner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)
            self._thread = None
        self.watcher.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.tick()
            self._stop.wait(max(0.05, self.tick_s - (time.monotonic() - started)))

    # -- status --------------------------------------------------------------------------------

    def model_info(self) -> dict[str, Any] | None:
        rt = self.watcher.runtime
        if rt is None:
            return None
        return {"id": rt.card.model_id, "backend": rt.backend, "step_s": rt.card.step_s}

    def status(self) -> dict[str, Any]:
        rt = self.watcher.runtime
        return {
            "enabled": rt is not None,
            "model": str(self.watcher.path) if self.watcher.path else None,
            "model_id": rt.card.model_id if rt else None,
            "backend": rt.backend if rt else None,
            "step_s": rt.card.step_s if rt else None,
            "infer_interval": self.infer_interval,
            "error": self.watcher.error,
            "reloads": self.watcher.reloads,
            "last_inference": self.last_inference,
            "inference_errors": self.inference_errors,
            "alerts_active": len(self.engine.active),
        }

    # -- one pass ------------------------------------------------------------------------------

    def _check_model(self) -> None:
        if self.watcher.check():
            self.metrics.set_model(self.model_info())
            self._discovered.clear()  # the forecast sensors follow the card's horizons

    def tick(self, now: float | None = None) -> None:
        """Reloads the model if it changed, then runs the model (when due) and the alert rules
        over every site. Never raises."""
        now = self.clock() if now is None else now
        self.ticks += 1
        try:
            self._check_model()
            if not self._restored:
                with _Reader(self.store) as conn:
                    self.engine.restore(derived.active_alerts(conn))
                self._restored = True
            with _Reader(self.store) as conn:
                devices = derived.device_rows(conn)
                # A large fleet's pass is spread over half the tick, so the ingest thread never
                # waits long for the interpreter (readings would queue behind the pass).
                chunks = max(1, len(devices) // YIELD_EVERY)
                self._pause = max(YIELD_S, min(YIELD_MAX_S, 0.5 * self.tick_s / chunks))
                sites: dict[str, list[dict[str, Any]]] = {}
                for d in devices:
                    sites.setdefault(d["site"], []).append(d)
                due = self.watcher.runtime is not None and (
                    self.last_inference is None
                    or now - self.last_inference >= self.infer_interval - 1e-6
                )
                if due:
                    self.last_inference = now
                for site, devs in sorted(sites.items()):
                    self._site(conn, site, devs, now, due)
            if now - self._last_pruned >= PRUNE_EVERY_S:
                self._last_pruned = now
                with self.store.transaction() as wconn:
                    derived.prune(wconn, now - self.history_days * 86400)
        except Exception as e:
            self.inference_errors += 1
            self.metrics.inference_error()
            self._errlog.warn("reasoner: %s: %s", type(e).__name__, e, exc_info=True)

    def _site(
        self, conn: Any, site: str, devs: list[dict[str, Any]], now: float, due: bool
    ) -> None:
        outputs: dict[str, dict[str, Any]] = {}
        if due:
            try:
                outputs = self._infer(conn, site, devs, now)
            except Exception as e:
                self.inference_errors += 1
                self.metrics.inference_error()
                self._errlog.warn(
                    "inference on site %s failed: %s: %s", site, type(e).__name__, e, exc_info=True
                )
        views = []
        for i, d in enumerate(devs):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                # Give the ingest thread the GIL: on a large site this loop would otherwise hold
                # it for a long burst every tick, and every reading arriving meanwhile waits.
                self._stop.wait(self._pause)
            latest = derived.latest_readings(conn, d["dev"], self.cfg.readings_needed)
            received = [s.received for s in latest if s.received is not None]
            out = outputs.get(d["dev"], {})
            views.append(
                DeviceView(
                    dev=d["dev"],
                    site=site,
                    readings=latest,
                    status=d["status"],
                    interval_s=_interval(d["meta"]),
                    last_received=max(*received, self.started) if received else None,
                    fault=out.get("fault"),
                    forecast=out.get("forecast"),
                )
            )
        events = self.engine.evaluate(views, now)
        if events:
            with self.store.transaction() as wconn:
                derived.save_alert_events(wconn, events)
            for alert, ev in events:
                self.metrics.alert(ev["state"], alert.level)
                self._publish(f"{self.prefix}/{site}/alerts", ev, retain=False)
                self._emit("alert", ev)
                log.info("alert %s: %s", ev["state"], ev["message"])
        for d in devs:
            self._device_extras(site, d["dev"], now)
        self._site_extras(site)

    def _site_extras(self, site: str) -> None:
        """The site's Home Assistant device (its insights) while a model is loaded. Without a
        model, an empty retained config once: it removes a site device a previous run with a
        model left on the broker, as the device configs drop their forecast sensors."""
        if not self.ha_discovery:
            return
        rt = self.watcher.runtime
        insights = tuple(rt.card.insights) if rt is not None else ()
        expire = int(max(3 * self.infer_interval, 60)) + 5
        sig = (insights, expire)
        if self._site_discovered.get(site) == sig:
            return
        self._site_discovered[site] = sig
        topic = discovery.site_topic(site, self.ha_prefix)
        if insights:
            self._publish(topic, discovery.site_config(site, self.prefix, insights, expire))
        elif self.publish_fn is not None:
            try:
                self.publish_fn(topic, b"", True)
            except Exception as e:  # as _publish: a broker hiccup must not lose the pass
                self._errlog.warn("cannot publish on %s: %s", topic, e)

    def _device_extras(self, site: str, dev: str, now: float) -> None:
        """The retained per-device alert summary and the Home Assistant discovery config."""
        active = sorted(self.engine.active_for(dev), key=lambda a: a.since)
        key = tuple((a.id, a.level) for a in active)
        if self._alert_summary.get(dev) != key:
            self._alert_summary[dev] = key
            self._publish(
                discovery.alert_topic(self.prefix, site, dev), _summary(site, dev, now, active)
            )
        if not self.ha_discovery:
            return
        rt = self.watcher.runtime
        horizons = tuple(rt.card.horizons_s) if rt is not None else None
        expire = int(max(3 * self.infer_interval, 60)) + 5
        sig = (site, horizons, expire)
        if self._discovered.get(dev) != sig:
            self._discovered[dev] = sig
            cfg = discovery.config(dev, site, self.prefix, horizons, expire)
            self._publish(discovery.topic(dev, self.ha_prefix), cfg)

    # -- the model -----------------------------------------------------------------------------

    def _infer(
        self, conn: Any, site: str, devs: Sequence[dict[str, Any]], now: float
    ) -> dict[str, dict[str, Any]]:
        """Runs the model over one site's devices (``derived.device_rows``), publishes and
        stores; returns per-device verdicts for the alert rules:
        ``{dev: {"fault": (class, p), "forecast": [(h, t, rh)]}}``."""
        rt = self.watcher.runtime
        card = rt.card
        announced = {d["dev"]: _interval(d.get("meta") or {}) for d in devs}
        nodes = sorted(announced)
        if len(nodes) > card.nodes:
            if site not in self._truncated_logged:
                self._truncated_logged.add(site)
                log.warning(
                    "site %s has %d devices, the model %d slots: reasoning over the first %d "
                    "by id (%s .. %s)",
                    site,
                    len(nodes),
                    card.nodes,
                    card.nodes,
                    nodes[0],
                    nodes[card.nodes - 1],
                )
            nodes = nodes[: card.nodes]
        grid = card
        if self.time_scale != 1.0:
            grid = dataclasses.replace(card, step_s=card.step_s / self.time_scale)  # type: ignore[arg-type]
        spacing_s = card.judged_spacing_s(grid.step_s)
        series, judged = [], []
        for dev in nodes:
            rows = derived.readings_between(conn, dev, now - grid.window_s, now)
            arr = _arrays(rows)
            series.append(arr)
            judged.append(_judgeable(arr[0], now, grid.step_s, announced[dev], spacing_s))
        enc = window(series, now, grid)
        if not enc.mask.any():
            return {}  # nobody reported within the window: nothing to reason about
        t0 = time.perf_counter()
        out = rt.run(x=enc.x[None], node_mask=enc.mask[None])
        self.metrics.observe_inference(time.perf_counter() - t0)
        fc = decode_forecast(out["forecast"], enc.last_t, enc.last_rh, card)
        fault = np.asarray(out["fault"])[0]
        adj = np.asarray(out["adjacency"])[0]
        router = np.asarray(out["router"])[0]
        insight = np.asarray(out["insight"])[0]
        ts = round(now, 3)
        model_id = card.model_id
        live = [i for i in range(len(nodes)) if enc.mask[i] > 0]
        horizons = [int(h) for h in card.horizons_s]
        forecasts, health, verdicts = [], [], {}
        t_idx, rh_idx = card.targets.index("t"), card.targets.index("rh")
        ok_idx = card.fault_classes.index("ok")

        def verdict_forecast(t_vals: list[Any], rh_vals: list[Any]) -> list[Any]:
            return [
                (h, t, r)
                for h, t, r in zip(horizons, t_vals, rh_vals, strict=True)
                if t is not None and r is not None
            ]

        for i in live:
            dev = nodes[i]
            t_vals = [_round(v) for v in fc[i, :, t_idx]]
            rh_vals = [_round(min(100.0, max(0.0, v))) for v in fc[i, :, rh_idx]]
            forecasts.append(
                {
                    "v": 1,
                    "dev": dev,
                    "site": site,
                    "ts": ts,
                    "model": model_id,
                    "horizons": horizons,
                    "t": t_vals,
                    "rh": rh_vals,
                }
            )
            if not judged[i]:
                verdicts[dev] = {"fault": None, "forecast": verdict_forecast(t_vals, rh_vals)}
                continue
            probs = {
                c: _round(float(p), 4) for c, p in zip(card.fault_classes, fault[i], strict=True)
            }
            k = int(card.fault_decision(fault[i]))  # the card's rule, as evaluate scores it
            neigh = sorted(
                ((float(adj[i, j]), nodes[j]) for j in live if j != i and adj[i, j] > 0),
                reverse=True,
            )[:3]
            health.append(
                {
                    "v": 1,
                    "dev": dev,
                    "site": site,
                    "ts": ts,
                    "model": model_id,
                    "fault": card.fault_classes[k],
                    "probs": probs,
                    "neighbours": [{"dev": d, "weight": _round(w, 4)} for w, d in neigh],
                    "router": {
                        "self": _round(float(router[i, 0]), 4),
                        "neighbours": _round(float(router[i, 1]), 4),
                    },
                }
            )
            verdicts[dev] = {
                # a fault verdict's confidence is the fault classes' total (the card's rule)
                "fault": (
                    card.fault_classes[k],
                    float(fault[i, k] if k == ok_idx else 1.0 - fault[i, ok_idx]),
                ),
                "forecast": verdict_forecast(t_vals, rh_vals),
            }
        edges = [
            {"from": nodes[j], "to": nodes[i], "weight": _round(float(adj[i, j]), 4)}
            for i in live
            for j in live
            if i != j and adj[i, j] >= self.edge_threshold
        ]
        ins = {
            "v": 1,
            "site": site,
            "ts": ts,
            "model": model_id,
            **{name: _round(float(p), 4) for name, p in zip(card.insights, insight, strict=True)},
            # the card's rule (insight_threshold): p(ventilation) 0.2 can already mean "yes"
            "detected": {
                name: bool(yes)
                for name, yes in zip(card.insights, card.insight_decision(insight), strict=True)
            },
            "router": {
                nodes[i]: {
                    "self": _round(float(router[i, 0]), 4),
                    "neighbours": _round(float(router[i, 1]), 4),
                }
                for i in live
            },
            "graph": {"nodes": [nodes[i] for i in live], "edges": edges},
        }
        with self.store.transaction() as wconn:
            derived.save_outputs(wconn, forecasts, health, ins)
        for p in forecasts:
            self._publish(f"{self.prefix}/{site}/{p['dev']}/forecast", p)
            self._emit("forecast", p)
        for p in health:
            self._publish(f"{self.prefix}/{site}/{p['dev']}/health", p)
            self._emit("health", p)
        self._publish(f"{self.prefix}/{site}/insight", ins)
        self._emit("insight", ins)
        return verdicts

    # -- output --------------------------------------------------------------------------------

    def _publish(self, topic: str, payload: Mapping[str, Any], retain: bool = True) -> None:
        if self.publish_fn is None:
            return
        try:
            self.publish_fn(topic, json.dumps(payload, separators=(",", ":")).encode(), retain)
        except Exception as e:  # a broker hiccup must not lose the rest of the pass
            self._errlog.warn("cannot publish on %s: %s", topic, e)

    def _emit(self, kind: str, data: Any) -> None:
        if self.events is not None:
            self.events.publish(kind, data)


class _Reader:
    """A read-only connection for one pass (either backend), closed afterwards."""

    def __init__(self, store: Store) -> None:
        self.conn = store.reader()

    def __enter__(self) -> Any:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _round(v: float, nd: int = 2) -> float | None:
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def _interval(meta: dict[str, Any]) -> float | None:
    """The reading interval a board announces in its meta, in seconds; None if it gives none."""
    v = meta.get("interval")
    return float(v) if _is_num(v) and v > 0 else None


def _judgeable(
    ts: np.ndarray,
    now: float,
    step_s: float,
    interval_s: float | None = None,
    spacing_s: float | None = None,
) -> bool:
    """Whether the model's fault verdict on a board means anything (docs/gateway-reasoning.md).

    Not for a board silent for SILENT_STEPS steps: training never asks the model about one
    (model.data masks a label older than two steps), and its verdicts on one were mostly
    "stuck" or "drift". Nor for a board reading less often than training showed the fault head,
    the card's ``judged_spacing_s`` (``spacing_s``; the default: SPARSE_STEPS steps, a card
    without deep-sleep boards in training, whose model called a healthy board read every 5
    minutes among boards reading as usual faulty in 35 % of held-out Room-Climate windows,
    evaluate's sparse_reads). The board's announced interval (meta) decides as well: a board
    reading less often than once per window shows one read or none, so its reads' spacing
    cannot. The rule-based alerts and the offline alert still cover both."""
    if not len(ts) or now - float(ts.max()) >= SILENT_STEPS * step_s:
        return False
    limit = SPARSE_STEPS * step_s if spacing_s is None else spacing_s
    if interval_s is not None and interval_s > limit:
        return False
    spacing = np.diff(np.unique(ts))
    return not (len(spacing) and float(np.median(spacing)) > limit)


def _arrays(rows: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ts = np.array([s.ts for s in rows], dtype=np.float64)
    t = np.array([np.nan if s.t is None else s.t for s in rows], dtype=np.float64)
    rh = np.array([np.nan if s.rh is None else s.rh for s in rows], dtype=np.float64)
    ok = np.array([s.ok for s in rows], dtype=bool)
    return ts, t, rh, ok


def _summary(site: str, dev: str, now: float, active: Sequence[Alert]) -> dict[str, Any]:
    order = {"info": 0, "warning": 1, "critical": 2}
    top = max((a.level for a in active), key=order.__getitem__, default=None)
    return {
        "v": 1,
        "dev": dev,
        "site": site,
        "ts": round(now, 3),
        "active": len(active),
        "level": top,
        "alerts": [
            {"id": a.id, "kind": a.kind, "level": a.level, "message": a.message, "since": a.since}
            for a in active
        ],
    }
