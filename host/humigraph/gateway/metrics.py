"""Gateway counters and their Prometheus text exposition (no client library needed)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from .validate import REASONS

# humigraph_inference_seconds buckets (seconds): an INT8 site model takes milliseconds on a Jetson
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Thread-safe counters; gauges (queue depth, gaps) are passed to :meth:`render`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages_received = 0
        self.readings_stored = 0
        self.duplicates = 0
        self.batches = 0
        self.quarantined: dict[str, int] = dict.fromkeys((*REASONS, "flood"), 0)
        self.flood_dropped: dict[str, int] = {}  # dev -> messages over its flood limit
        # the reasoner (reasoner.py): inference latency, errors, alert events, the loaded model
        self.inference_counts = [0] * len(INFERENCE_BUCKETS)
        self.inference_sum = 0.0
        self.inference_count = 0
        self.inference_errors = 0
        self.alert_events: dict[tuple[str, str], int] = {}  # (state, level) -> count
        self.model: dict[str, object] | None = None

    def observe_inference(self, seconds: float) -> None:
        with self._lock:
            self.inference_sum += seconds
            self.inference_count += 1
            for i, le in enumerate(INFERENCE_BUCKETS):
                if seconds <= le:
                    self.inference_counts[i] += 1

    def inference_error(self) -> None:
        with self._lock:
            self.inference_errors += 1

    def alert(self, state: str, level: str) -> None:
        with self._lock:
            self.alert_events[(state, level)] = self.alert_events.get((state, level), 0) + 1

    def set_model(self, info: dict[str, object] | None) -> None:
        with self._lock:
            self.model = dict(info) if info else None

    def _reasoning_lines(self) -> list[str]:
        with self._lock:
            counts, total, n = list(self.inference_counts), self.inference_sum, self.inference_count
            errors, events, model = self.inference_errors, dict(self.alert_events), self.model
        lines = [
            "# HELP humigraph_inference_seconds Time to run the model over one site.",
            "# TYPE humigraph_inference_seconds histogram",
        ]
        lines += [
            f'humigraph_inference_seconds_bucket{{le="{le:g}"}} {c}'
            for le, c in zip(INFERENCE_BUCKETS, counts, strict=True)
        ]
        lines += [
            f'humigraph_inference_seconds_bucket{{le="+Inf"}} {n}',
            f"humigraph_inference_seconds_sum {total:.6f}",
            f"humigraph_inference_seconds_count {n}",
            "# HELP humigraph_inference_errors_total Reasoner passes or site inferences that failed.",
            "# TYPE humigraph_inference_errors_total counter",
            f"humigraph_inference_errors_total {errors}",
            "# HELP humigraph_alert_events_total Alert events published, by state and level.",
            "# TYPE humigraph_alert_events_total counter",
        ]
        lines += [
            f'humigraph_alert_events_total{{state="{s}",level="{lv}"}} {c}'
            for (s, lv), c in sorted(events.items())
        ]
        lines += [
            "# HELP humigraph_model_info The reasoning model loaded (1), by id and backend.",
            "# TYPE humigraph_model_info gauge",
        ]
        if model:
            lines.append(
                f'humigraph_model_info{{model="{model.get("id")}",backend="{model.get("backend")}",'
                f'step_s="{model.get("step_s")}"}} 1'
            )
        return lines

    def received(self, n: int = 1) -> None:
        with self._lock:
            self.messages_received += n

    def batch(self, stored: int, duplicates: int, quarantined: Mapping[str, int]) -> None:
        with self._lock:
            self.batches += 1
            self.readings_stored += stored
            self.duplicates += duplicates
            for reason, n in quarantined.items():
                self.quarantined[reason] = self.quarantined.get(reason, 0) + n

    def flood(self, by_dev: Mapping[str, int]) -> None:
        with self._lock:
            for dev, n in by_dev.items():
                self.flood_dropped[dev] = self.flood_dropped.get(dev, 0) + n

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "messages_received": self.messages_received,
                "readings_stored": self.readings_stored,
                "duplicates": self.duplicates,
                "batches": self.batches,
                "quarantined": dict(self.quarantined),
                "flood_dropped": dict(self.flood_dropped),
            }

    def render(self, *, queue_depth: int, gaps: int, connected: bool) -> str:
        s = self.snapshot()
        q = s["quarantined"]
        assert isinstance(q, dict)
        lines = [
            "# HELP humigraph_messages_received_total MQTT messages received by the gateway.",
            "# TYPE humigraph_messages_received_total counter",
            f"humigraph_messages_received_total {s['messages_received']}",
            "# HELP humigraph_readings_stored_total Readings stored (first copy of each identity).",
            "# TYPE humigraph_readings_stored_total counter",
            f"humigraph_readings_stored_total {s['readings_stored']}",
            "# HELP humigraph_duplicates_total Readings received again and absorbed by (dev, boot, seq).",
            "# TYPE humigraph_duplicates_total counter",
            f"humigraph_duplicates_total {s['duplicates']}",
            "# HELP humigraph_quarantined_total Messages refused by validation, by reason.",
            "# TYPE humigraph_quarantined_total counter",
        ]
        lines += [f'humigraph_quarantined_total{{reason="{r}"}} {n}' for r, n in sorted(q.items())]
        lines += [
            "# HELP humigraph_gaps_total Readings missing within each (dev, boot) seq range (late replays fill them).",
            "# TYPE humigraph_gaps_total gauge",
            f"humigraph_gaps_total {gaps}",
            "# HELP humigraph_queue_depth Messages received and not yet committed.",
            "# TYPE humigraph_queue_depth gauge",
            f"humigraph_queue_depth {queue_depth}",
            "# HELP humigraph_batches_total Store transactions committed by the ingest worker.",
            "# TYPE humigraph_batches_total counter",
            f"humigraph_batches_total {s['batches']}",
            "# HELP humigraph_broker_connected 1 while the gateway is connected to the broker.",
            "# TYPE humigraph_broker_connected gauge",
            f"humigraph_broker_connected {int(connected)}",
        ]
        flood = s["flood_dropped"]
        assert isinstance(flood, dict)
        lines += [
            "# HELP humigraph_flood_dropped_total Messages quarantined because their board was over its flood limit.",
            "# TYPE humigraph_flood_dropped_total counter",
        ]
        lines += [
            f'humigraph_flood_dropped_total{{dev="{d}"}} {n}' for d, n in sorted(flood.items())
        ]
        lines += self._reasoning_lines()
        return "\n".join(lines) + "\n"
