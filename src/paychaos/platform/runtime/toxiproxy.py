"""Toxiproxy for the local stack: its process, and a thin synchronous client for its REST API.

Faults such as `slowDownstream` add toxics through `Toxiproxy`; every removal is safe to repeat,
because reverts run again after a crash (`paychaos halt`).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from paychaos.platform.runtime.installing import Tools
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.processes import HttpReady, ProcessSpec
from paychaos.platform.topology import Topology

Stream = Literal["upstream", "downstream"]


class ToxiproxyError(Exception):
    """The Toxiproxy API refused a request or could not be reached; the message is one line."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def toxiproxy_process(topology: Topology, tools: Tools, run_dir: RunDir) -> ProcessSpec:
    return ProcessSpec(
        name="toxiproxy",
        kind="toxiproxy",
        argv=[str(tools.toxiproxy), "-host", topology.host, "-port", str(topology.ports.toxiproxy_api)],
        ready=HttpReady(f"{topology.toxiproxy_url}/version"),
        cwd=str(run_dir.root),
    )


class Toxiproxy:
    """The Toxiproxy v2 REST API (`/proxies`, `/proxies/{p}/toxics`, `/reset`), synchronously."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                  headers={"User-Agent": "paychaos"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Toxiproxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, json: Any = None, ok_missing: bool = False) -> Any:
        try:
            response = self._http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise ToxiproxyError(f"Toxiproxy API at {self.base_url} is unreachable ({type(exc).__name__}); "
                                 "is the stack up? (`paychaos stack up`)") from exc
        if response.status_code == 404 and ok_missing:
            return None
        if response.status_code >= 400:
            try:
                detail = response.json().get("error") or response.text
            except ValueError:
                detail = response.text
            raise ToxiproxyError(f"Toxiproxy {method} {path} failed with {response.status_code}: {str(detail).strip()}",
                                 status=response.status_code)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def version(self) -> str:
        return str((self._request("GET", "/version") or {}).get("version", ""))

    def proxies(self) -> dict[str, dict[str, Any]]:
        """Every proxy by name, with its listen/upstream/enabled and active toxics."""
        return self._request("GET", "/proxies") or {}

    def ensure_proxy(self, name: str, listen: str, upstream: str) -> dict[str, Any]:
        """Create the proxy, or update it in place so it matches; it ends up enabled."""
        current = self.proxies().get(name)
        wanted = {"listen": listen, "upstream": upstream, "enabled": True}
        if current is None:
            return self._request("POST", "/proxies", json={"name": name, **wanted})
        if any(current.get(k) != v for k, v in wanted.items()):
            return self._request("POST", f"/proxies/{name}", json=wanted)
        return current

    def ensure_proxies(self, topology: Topology) -> None:
        """One proxy per topology entry, in front of its upstream (a service's internal load
        balancer, or PostgreSQL)."""
        for name, spec in topology.proxies.items():
            self.ensure_proxy(name, f"{topology.host}:{spec.listen}", f"{topology.host}:{topology.upstream_port(spec.upstream)}")

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/proxies/{proxy}/toxics") or []

    def add_toxic(self, proxy: str, name: str, type: str, attributes: dict[str, Any],
                  stream: Stream = "downstream", toxicity: float = 1.0) -> dict[str, Any]:
        """Add a toxic (latency, timeout, reset_peer, bandwidth...); an existing one of that name is updated."""
        body = {"name": name, "type": type, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        try:
            return self._request("POST", f"/proxies/{proxy}/toxics", json=body)
        except ToxiproxyError as exc:
            # Re-injecting after an interrupted run must not fail on the leftover toxic.
            if exc.status != 409:
                raise
        return self._request("POST", f"/proxies/{proxy}/toxics/{name}",
                             json={"stream": stream, "toxicity": toxicity, "attributes": attributes})

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Remove a toxic; a toxic (or proxy) that is already gone counts as removed."""
        self._request("DELETE", f"/proxies/{proxy}/toxics/{name}", ok_missing=True)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._request("POST", "/reset")
