"""Gateway counters and their Prometheus text exposition (no client library needed)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from .validate import REASONS


class Metrics:
    """Thread-safe counters; gauges (queue depth, gaps) are passed to :meth:`render`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages_received = 0
        self.readings_stored = 0
        self.duplicates = 0
        self.batches = 0
        self.quarantined: dict[str, int] = dict.fromkeys(REASONS, 0)

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

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "messages_received": self.messages_received,
                "readings_stored": self.readings_stored,
                "duplicates": self.duplicates,
                "batches": self.batches,
                "quarantined": dict(self.quarantined),
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
        return "\n".join(lines) + "\n"
