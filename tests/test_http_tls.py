"""HttpClient over TLS, against an aiohttp server on 127.0.0.1 with a certificate made here.

The certificate names only ``127.0.0.1`` in its subjectAltName; the client trusts it
through the ``ssl_context`` it is given (a deployment trusts its CA through the system store or
``SSL_CERT_FILE``). What the untrusted and wrong-protocol cases say is in test_providers.py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from controller.providers._http import ConnectFailed, HttpClient
from tests.http_client_support import self_signed


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path, name="gateway-test", san="IP:127.0.0.1")


@pytest.fixture
async def tls_url(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    """An HTTPS server answering every POST with its peer count, so reuse shows."""
    peers: set[object] = set()

    async def answer(request: web.Request) -> web.Response:
        peers.add(request.transport)
        return web.json_response({"connections": len(peers), "got": await request.text()})

    app = web.Application()
    app.router.add_post("/v1/echo", answer)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


async def test_a_trusted_server_answers_over_one_kept_alive_connection(
    tls_url: str, certificate: tuple[Path, Path]
) -> None:
    client = HttpClient(tls_url, ssl_context=ssl.create_default_context(cafile=certificate[0]))
    bodies = []
    try:
        async with asyncio.timeout(10):
            for number in range(3):
                resp = await client.post(
                    client.target("/echo"), [], b"call %d" % number, connect_timeout=5
                )
                try:
                    assert resp.status == 200
                    bodies.append(await resp.read())
                finally:
                    resp.release()
    finally:
        await client.close()
    assert bodies == [b'{"connections": 1, "got": "call %d"}' % n for n in range(3)]


async def test_the_host_name_is_checked(tls_url: str, certificate: tuple[Path, Path]) -> None:
    """A name the certificate does not carry is refused, in words without the name."""
    by_name = tls_url.replace("127.0.0.1", "localhost")  # the same server, a name not in the SAN
    client = HttpClient(by_name, ssl_context=ssl.create_default_context(cafile=certificate[0]))
    try:
        async with asyncio.timeout(10):
            with pytest.raises(ConnectFailed) as caught:
                await client.post(client.target("/echo"), [], b"", connect_timeout=5)
    finally:
        await client.close()
    assert caught.value.reason == "the server's TLS certificate: issued for another host name"
    assert "localhost" not in str(caught.value)
