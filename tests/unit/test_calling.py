"""ServiceClient against real sockets on 127.0.0.1: what a service sees for an answer, a redirect,
a dependency that never answers and one that is not there."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from paychaos.platform.services.calling import CallFailed, CallTimedOut, ServiceClient


class Peer:
    """A one-answer HTTP server: records each request, answers ``answer`` (None: never)."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            self.requests.append(head + (await reader.readexactly(length) if length else b""))
            if self.answer is None:
                await asyncio.Event().wait()
            writer.write(self.answer)  # type: ignore[arg-type]
            await writer.drain()
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            server.close()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await server.wait_closed()


async def call(url: str, timeout: float, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
    client = ServiceClient(url, timeout)
    try:
        return await client.request(*args, **kwargs)  # type: ignore[arg-type]
    finally:
        await client.aclose()


def test_an_answer_comes_back_with_its_status_body_and_headers_and_the_request_goes_out_as_given() -> None:
    body = b'{"error": {"code": "INSUFFICIENT_FUNDS"}}'
    peer = Peer(b"HTTP/1.1 422 Unprocessable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    async def main() -> None:
        async with peer.serving() as url:
            reply = await call(url, 2.0, "POST", "/v1/transfers", json={"id": "t1"}, query="a=%C3%A9&b=1",
                               headers=[("Idempotency-Key", "caf\u00e9")])
        assert reply.status_code == 422 and reply.json() == {"error": {"code": "INSUFFICIENT_FUNDS"}}
        assert reply.headers["retry-after"] == "1"

    asyncio.run(main())
    (request,) = peer.requests
    assert request.startswith(b"POST /v1/transfers?a=%C3%A9&b=1 HTTP/1.1\r\n")
    assert b"Idempotency-Key: caf\xc3\xa9\r\n" in request  # the text as UTF-8, byte for byte
    assert request.endswith(b'{"id": "t1"}')


def test_a_redirect_is_passed_on_not_followed() -> None:
    peer = Peer(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")

    async def main() -> None:
        async with peer.serving() as url:
            reply = await call(url, 2.0, "GET", "/v1/payments/p1")
        assert reply.status_code == 302 and reply.headers["location"] == "/elsewhere"

    asyncio.run(main())
    assert len(peer.requests) == 1


def test_a_dependency_that_never_answers_times_out_as_such() -> None:
    peer = Peer(None)

    async def main() -> None:
        async with peer.serving() as url:
            with pytest.raises(CallTimedOut, match=r"no answer within 0\.2s"):
                await call(url, 0.2, "POST", "/v1/authorizations", json={})

    asyncio.run(main())
    assert len(peer.requests) == 1


def test_a_dependency_that_is_not_there_fails_without_being_called_a_timeout() -> None:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        with pytest.raises(CallFailed) as caught:
            await call(f"http://127.0.0.1:{port}", 30.0, "GET", "/health/live")
        assert not isinstance(caught.value, CallTimedOut)

    asyncio.run(main())
