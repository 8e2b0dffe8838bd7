"""Toxiproxy, the fault tool behind every ``slowDownstream``: a thin synchronous client for its
REST API, and the three operations a driver needs (add a plan's toxics and show them, remove
them, tell they are gone). Any target whose downstreams go through a Toxiproxy uses these: the
reference platform's own, or one in front of a user's dependency.

Every removal is safe to repeat, because reverts run again after a crash (`paychaos halt`).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from paychaos.faults.driving import InjectionFailed, RevertFailed, TargetUnreachable
from paychaos.faults.planning import FaultPlan, ObservedProxy

Stream = Literal["upstream", "downstream"]


class ToxiproxyError(Exception):
    """The Toxiproxy API refused a request or could not be reached; the message is one line."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
            raise ToxiproxyError(f"Toxiproxy API at {self.base_url} is unreachable ({type(exc).__name__}): "
                                 "is Toxiproxy running there? (the reference platform's: `paychaos stack up`)") from exc
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


# -- a slowDownstream plan on a Toxiproxy ------------------------------------------------------


def add_toxics(url: str, plan: FaultPlan) -> dict[str, Any]:
    """Add the plan's toxics to its proxy, then read them back: the toxics as Toxiproxy lists them
    (the proof the fault is on). ``InjectionFailed`` when one is not listed."""
    assert plan.proxy is not None
    try:
        with Toxiproxy(url) as api:
            for toxic in plan.toxics:
                api.add_toxic(plan.proxy, toxic.name, toxic.type, dict(toxic.attributes), stream=toxic.stream)  # type: ignore[arg-type]
            present = {t["name"]: t for t in api.toxics(plan.proxy)}
    except ToxiproxyError as exc:
        raise TargetUnreachable(str(exc)) from None
    missing = [t.name for t in plan.toxics if t.name not in present]
    if missing:
        raise InjectionFailed(f"Toxiproxy accepted but does not list {', '.join(missing)} on proxy {plan.proxy}")
    return {"proxy": plan.proxy, "toxics": [present[t.name] for t in plan.toxics]}


def remove_toxics(url: str, plan: FaultPlan) -> None:
    """Remove the plan's toxics; ``RevertFailed`` when Toxiproxy cannot be told."""
    assert plan.proxy is not None
    try:
        with Toxiproxy(url) as api:
            for toxic in plan.toxics:
                api.remove_toxic(plan.proxy, toxic.name)
    except ToxiproxyError as exc:
        raise RevertFailed(f"could not remove toxics from proxy {plan.proxy}: {exc}") from None


def toxics_gone(url: str, plan: FaultPlan) -> bool:
    """Whether none of the plan's toxics is on its proxy any more (False when Toxiproxy cannot say)."""
    assert plan.proxy is not None
    try:
        with Toxiproxy(url) as api:
            present = {t["name"] for t in api.toxics(plan.proxy)}
    except ToxiproxyError:
        return False
    return not present & {t.name for t in plan.toxics}


def observed_proxies(url: str, upstreams: dict[str, str] | None = None) -> tuple[ObservedProxy, ...]:
    """Every proxy with its active toxics, for planning; ``upstreams`` names what stands behind a
    proxy where the target knows it better than Toxiproxy's host:port."""
    try:
        with Toxiproxy(url) as api:
            found = api.proxies()
    except ToxiproxyError as exc:
        raise TargetUnreachable(str(exc)) from None
    upstreams = upstreams or {}
    return tuple(
        ObservedProxy(name=name, upstream=upstreams.get(name, str(data.get("upstream"))),
                      toxics=tuple(t["name"] for t in data.get("toxics", [])))
        for name, data in sorted(found.items())
    )


def active_toxics(url: str) -> list[str]:
    """Every toxic on every proxy, as "toxic <name> on <proxy>": what keeps a target from being settled."""
    with Toxiproxy(url, timeout=2) as api:
        proxies = api.proxies()
    return [f"toxic {t['name']} on {n}" for n, proxy in proxies.items() for t in proxy.get("toxics", [])]
