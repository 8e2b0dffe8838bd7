"""A thin PromQL client.

prometheus-api-client would pull pandas and matplotlib into every run for two HTTP GETs;
the instant-query endpoint is small and stable, so we call it directly.
"""

from __future__ import annotations

import math

import httpx


class PrometheusUnavailable(Exception):
    pass


class Prometheus:
    def __init__(self, url: str, timeout: float = 3.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def vector(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """The query's instant vector now, or at the Unix time ``at``."""
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            r = self._http.get(f"{self.url}/api/v1/query", params=params)
        except httpx.HTTPError as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.url} is unreachable: {exc}") from None
        if r.status_code != 200:
            raise PrometheusUnavailable(f"Prometheus refused the query ({r.status_code}): {r.text[:200]}")
        data = r.json()["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        """The single value of a query, or None when there is no data (or it is NaN)."""
        values = [v for _, v in self.vector(promql, at) if not math.isnan(v)]
        return values[0] if values else None
