"""Egress through an HTTP proxy (issue 16, must-have 4), against a real proxy on 127.0.0.1.

Which proxy a provider takes (its ``proxy:`` setting, ``HTTPS_PROXY`` / ``HTTP_PROXY``,
``NO_PROXY``), a CONNECT tunnel with TLS to the provider inside it, a plain-http provider in
absolute form with the proxy's credentials, and a proxy that says no. The proxy
(``tests/proxy_support.py``) maps the made-up host ``provider.test`` to 127.0.0.1: the gateway
never resolves a host it reaches through a proxy.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from controller._errors import ConfigError
from controller.config import ProviderConfig
from controller.config._model import ProviderKind
from controller.model import Message, Request
from controller.providers import Timeouts
from controller.providers._http import ConnectFailed, HttpClient
from controller.providers._http_proxy import Proxy, bypassed, proxy_for
from controller.providers.fake import FakeProvider
from controller.runtime import build_provider
from tests.http_client_support import self_signed
from tests.proxy_support import ForwardProxy, _basic

HELLO = Request(messages=(Message(role="user", content="hello"),))
LIMITS = Timeouts(connect=5.0, first_token=5.0, idle=5.0, total=10.0)
HTTPS = "https://api.example.com/v1"


@pytest.mark.parametrize(
    ("base_url", "configured", "env", "expected"),
    [
        (HTTPS, None, {}, None),
        (HTTPS, None, {"HTTPS_PROXY": "http://p:3128"}, ("p", 3128)),
        (HTTPS, None, {"HTTPS_PROXY": "http://a:1", "https_proxy": "b:2"}, ("b", 2)),
        (HTTPS, None, {"HTTP_PROXY": "http://p:3128"}, None),  # http's proxy is not https's
        ("http://api.example.com", None, {"HTTP_PROXY": "http://p"}, ("p", 80)),
        (HTTPS, "http://own:8080", {"HTTPS_PROXY": "http://p:3128"}, ("own", 8080)),
        (HTTPS, "none", {"HTTPS_PROXY": "http://p:3128"}, None),
        (HTTPS, None, {"HTTPS_PROXY": "http://p", "NO_PROXY": "example.com"}, None),
        ("https://127.0.0.1:8443", None, {"HTTPS_PROXY": "http://p"}, None),  # loopback
        ("http://localhost:11434", None, {"HTTP_PROXY": "http://p"}, None),
        ("https://127.0.0.1:8443", "http://own:1", {}, ("own", 1)),  # asked for: taken
    ],
)
def test_which_proxy_a_provider_takes(
    base_url: str, configured: str | None, env: dict[str, str], expected: tuple[str, int] | None
) -> None:
    proxy = proxy_for(base_url, configured, env)
    assert (proxy.host, proxy.port) == expected if proxy else expected is None


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "expected"),
    [
        ("*", "api.openai.com", 443, True),
        ("openai.com", "api.openai.com", 443, True),
        (".openai.com", "api.openai.com", 443, True),
        ("*.openai.com", "api.openai.com", 443, True),
        ("penai.com", "api.openai.com", 443, False),
        ("api.openai.com:8443", "api.openai.com", 443, False),
        ("api.openai.com:443", "api.openai.com", 443, True),
        ("10.0.0.0/8, other", "10.1.2.3", 443, True),
        ("", "api.openai.com", 443, False),
    ],
)
def test_no_proxy(no_proxy: str, host: str, port: int, expected: bool) -> None:
    assert bypassed(host, port, no_proxy) is expected


def test_proxy_credentials_become_basic_auth_and_never_print() -> None:
    proxy = Proxy.parse("http://gw:s%40cret@proxy.corp:3128")
    assert proxy.authorization == _basic("gw", "s@cret")
    assert "cret" not in repr(proxy)
    with pytest.raises(ConnectFailed, match="not http://") as caught:
        Proxy.parse("https://gw:pw-in-url@proxy.corp:3128")
    assert "pw-in-url" not in str(caught.value)


def test_a_proxy_setting_with_a_password_or_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="must not hold a user name or password"):
        ProviderConfig(kind=ProviderKind.OPENAI, proxy="http://u:p@proxy:3128")
    with pytest.raises(ValueError, match="must be an http:// URL"):
        ProviderConfig(kind=ProviderKind.OPENAI, proxy="socks5://proxy:1080")
    config = ProviderConfig(kind=ProviderKind.OPENAI)
    with pytest.raises(ConfigError, match=r"HTTPS_PROXY / HTTP_PROXY: .*not http://"):
        build_provider("p", config, {"HTTPS_PROXY": "https://proxy:3128"})


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path, name="provider.test", san="DNS:provider.test")


@pytest.fixture
async def tls_port(certificate: tuple[Path, Path]) -> AsyncIterator[int]:
    """An HTTPS server for ``provider.test`` on 127.0.0.1, echoing what it got."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"got": await request.text(), "host": request.host})

    app = web.Application()
    app.router.add_post("/v1/echo", echo)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield int(runner.addresses[0][1])
    await runner.cleanup()


async def test_https_goes_through_a_connect_tunnel(
    tls_port: int, certificate: tuple[Path, Path]
) -> None:
    trust = ssl.create_default_context(cafile=certificate[0])
    async with asyncio.timeout(10), ForwardProxy(password="tunnel-pw") as proxy:
        with_auth = proxy.url.replace("http://", "http://gw:tunnel-pw@")
        url = f"https://provider.test:{tls_port}/v1"
        client = HttpClient(
            url, ssl_context=trust, proxy=proxy_for(url, None, {"HTTPS_PROXY": with_auth})
        )
        try:
            for _ in range(2):  # the second call reuses the tunnel
                resp = await client.post(
                    client.target("/echo"), [], b"secret body", connect_timeout=5
                )
                status, body = resp.status, await resp.read()
                resp.release()
        finally:
            await client.close()
    assert status == 200
    assert b'"got": "secret body"' in body
    assert [s.line for s in proxy.seen] == [f"CONNECT provider.test:{tls_port} HTTP/1.1"]
    assert proxy.seen[0].authorization == _basic("gw", "tunnel-pw")


async def test_a_plain_http_provider_goes_in_absolute_form_from_the_environment() -> None:
    async with (
        asyncio.timeout(10),
        FakeProvider(name="behind") as fake,
        ForwardProxy(password="plain-pw") as proxy,
    ):
        port = fake.url("openai").split(":")[2].split("/")[0]
        env = {"HTTP_PROXY": proxy.url.replace("http://", "http://gw:plain-pw@")}
        config = ProviderConfig(
            kind=ProviderKind.OPENAI, base_url=f"http://provider.test:{port}/v1"
        )
        provider = build_provider("via-proxy", config, env)
        try:
            response = await provider.complete(HELLO, "m", LIMITS)
        finally:
            await provider.close()
    assert response.message.content
    assert proxy.seen[0].line == f"POST http://provider.test:{port}/v1/chat/completions HTTP/1.1"
    assert fake.requests == 1


async def test_a_proxy_that_refuses_is_a_connect_failure_naming_no_address(
    tls_port: int,
) -> None:
    async with asyncio.timeout(10), ForwardProxy(password="right") as proxy:
        url = f"https://provider.test:{tls_port}/v1"
        client = HttpClient(url, proxy=Proxy.parse(proxy.url.replace("//", "//gw:wrong-pw@")))
        try:
            with pytest.raises(
                ConnectFailed, match=r"the proxy refused the tunnel \(HTTP 407\)"
            ) as caught:
                await client.post(client.target("/echo"), [], b"{}", connect_timeout=5)
        finally:
            await client.close()
    assert "wrong-pw" not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)
    assert "provider.test" not in str(caught.value)
