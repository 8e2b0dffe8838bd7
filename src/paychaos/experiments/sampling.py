"""Per-second samples of the metrics the verdicts need, taken in a background thread.

Server-side numbers come from Prometheus, through the catalogue's series vocabulary (the keys
are ``probes.series``'s); client-side numbers from the load process's latest
per-second stats. Samples carry wall-clock time; the run context makes it relative to the
method start when it reads them (sampling begins before the method does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from paychaos.probes.catalogue import Catalogue
from paychaos.probes.prometheus import Prometheus, PrometheusUnavailable
from paychaos.probes.series import SAMPLE_WINDOW
from paychaos.probes.verdicts import Sample

log = logging.getLogger("paychaos.sampling")



class Sampler:
    def __init__(
        self,
        prometheus: Prometheus,
        catalogue: Catalogue,
        slos: list[str],
        client_stats: Callable[[], dict[str, object] | None] = lambda: None,
        period: float = 1.0,
    ) -> None:
        self.prometheus = prometheus
        self.queries = catalogue.vocabulary.sampled(SAMPLE_WINDOW)
        self.queries.update({f"slo:{n}": catalogue.slo(n).promql(SAMPLE_WINDOW) for n in slos})
        self.client_stats = client_stats
        self.period = period
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="paychaos-sampler", daemon=True)
        self.listeners: list[Callable[[], None]] = []  # called after each new sample

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def sample_once(self) -> Sample:
        values: dict[str, float | None] = {}
        for key, promql in self.queries.items():
            try:
                values[key] = self.prometheus.scalar(promql)
            except PrometheusUnavailable as exc:
                log.warning("%s", exc)
                values[key] = None
        stats = self.client_stats() or {}
        for key in ("rps", "fail_ratio", "p99"):
            value = stats.get(key)
            values[f"client_{key}"] = float(value) if isinstance(value, (int, float)) else None
        return Sample(time.time(), values)

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            sample = self.sample_once()
            with self._lock:
                self.samples.append(sample)
            for listener in self.listeners:
                listener()
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
