"""How one service calls another: an aiohttp session behind a small interface the services share.

aiohttp, not httpx: the calls between services are the platform's hot path (a status read makes
one, a payment four to six), and in the same run on this machine an httpx ``AsyncClient`` spent
1.8 ms of CPU per keep-alive request against 0.10 ms for aiohttp's session. At 269 status reads/s
the gateway's httpx client alone was the ceiling.

The services see :class:`Reply` (status, body bytes, headers) and two errors, so none of them
depends on aiohttp's types, and a replaced client would change this module only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

#: Idle keep-alive connections are closed here before HAProxy closes them (its http-keep-alive
#: timeout is 10 s): a request sent on a connection the balancer has just closed would fail.
KEEPALIVE_SECONDS = 5.0
MAX_CONNECTIONS = 200


class CallFailed(Exception):
    """The dependency could not be reached or broke the connection: no usable answer."""


class CallTimedOut(CallFailed):
    """The dependency did not answer within the topology's timeout for it."""


@dataclass(frozen=True)
class Reply:
    status_code: int
    content: bytes
    headers: CIMultiDictProxy[str]

    def json(self) -> Any:
        return json.loads(self.content)


class ServiceClient:
    """Calls one dependency through its load balancer (or its Toxiproxy), with its timeout.

    ``timeout`` is the whole call's bound, from taking a connection to the last byte of the
    body; None waits for ever (timeouts switched off: the defect some experiments rehearse).
    The session is made on the first call, inside the event loop that will use it.
    """

    def __init__(self, base_url: str, timeout: float | None) -> None:
        self.base_url = base_url.rstrip("/")
        # ceil_threshold: aiohttp rounds a deadline of 5 s or more up to the next whole second
        # unless told not to, and the bound is the topology's, to the millisecond.
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=None, sock_read=None, connect=None,
                                             ceil_threshold=math.inf)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        query: str = "",
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    ) -> Reply:
        """Send one request; ``path`` and ``query`` go out as given (already encoded)."""
        url = URL(f"{self.base_url}{path}{'?' + query if query else ''}", encoded=True)
        try:
            async with self._open().request(  # a redirect is an answer to pass on, not to follow
                method, url, json=json, data=content, headers=CIMultiDict(headers), allow_redirects=False
            ) as response:
                body = await response.read()
                return Reply(response.status, body, response.headers)
        except TimeoutError as exc:
            raise CallTimedOut(f"{method} {path}: no answer within {self.timeout.total}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise CallFailed(f"{method} {path}: {exc!r}") from exc

    async def post(self, path: str, *, json: Any = None) -> Reply:
        return await self.request("POST", path, json=json)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
