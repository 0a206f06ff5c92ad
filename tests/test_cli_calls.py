"""How `failover status` and `failover drill` call a running gateway when the answer is not the
happy one: each failure one line and exit 1, never a traceback; environment proxies honoured.

The commands run as subprocesses against real servers on loopback; the timeout, which takes
10 s at its real value, is checked in-process with a shorter one.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from controller import _gateway_client
from controller._errors import FailoverError
from controller._gateway_client import call_json
from tests.fakes_chat import unused_port

ROOT = Path(__file__).resolve().parents[1]
# No proxy from the machine running the tests: each test says which it wants.
NO_PROXY = {"http_proxy": "", "https_proxy": "", "no_proxy": ""}
STATUS = {"version": 7, "mode": "enforce", "kill_switch": {"describe": "off"}, "tiers": []}


@pytest.fixture
async def odd_gateway() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A server answering as a broken gateway, or as a proxy would (any absolute-form target):
    its URL and the requests it saw."""
    seen: list[web.Request] = []
    release = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        await request.read()
        if request.path == "/broken/status.json":
            return web.Response(status=500, text="x" * 400)
        if request.path == "/admin/drill":
            return web.json_response({"error": "wrong admin token"}, status=403)
        if request.path == "/stalled/status.json":
            await release.wait()
        if request.path == "/cut/status.json":
            response = web.StreamResponse(headers={"content-length": "100"})
            await response.prepare(request)
            await response.write(b'{"version":')
            assert request.transport is not None
            request.transport.close()
            return response
        return web.json_response(STATUS)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        release.set()
        await runner.cleanup()


async def failover(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit code and stderr of one command, run while the test's servers keep serving."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "controller.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **NO_PROXY, **(env or {})},
        cwd=ROOT,
        check=False,
    )
    return result.returncode, result.stderr


async def test_an_error_status_is_one_line_with_the_start_of_its_body(
    odd_gateway: tuple[str, list[web.Request]],
) -> None:
    url, _ = odd_gateway
    code, err = await failover("status", "--url", f"{url}/broken")
    assert code == 1
    assert err == f"error: {url}/broken/status.json: HTTP 500: {'x' * 300}\n"


async def test_a_refused_drill_says_why_and_sends_the_token(
    odd_gateway: tuple[str, list[web.Request]],
) -> None:
    url, seen = odd_gateway
    drill = ("drill", "primary", "--seconds", "5", "--admin-url", url)
    code, err = await failover(*drill, env={"FAILOVER_ADMIN_TOKEN": "adm-1"})
    assert code == 1
    assert err == f'error: {url}/admin/drill: HTTP 403: {{"error": "wrong admin token"}}\n'
    (request,) = seen
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer adm-1"
    assert request.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("refused", "Connection refused"),
        ("cut", "the answer was cut off"),
        ("not a url", "not an http:// or https:// URL"),
    ],
)
async def test_no_answer_is_one_line_saying_why(
    odd_gateway: tuple[str, list[web.Request]], where: str, reason: str
) -> None:
    url = {
        "refused": f"http://127.0.0.1:{unused_port()}",
        "cut": f"{odd_gateway[0]}/cut",
        "not a url": "gateway-without-a-scheme",
    }[where]
    code, err = await failover("status", "--url", url)
    assert code == 1
    assert err == f"error: {url}/status.json: cannot connect ({reason}). Is the gateway running?\n"


async def test_a_stalled_gateway_times_out(
    odd_gateway: tuple[str, list[web.Request]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read may take TIMEOUT (10 s); here 0.2 s, to see the stall end in the error."""
    url = f"{odd_gateway[0]}/stalled/status.json"
    monkeypatch.setattr(_gateway_client, "TIMEOUT", 0.2)
    with pytest.raises(FailoverError) as caught:
        await asyncio.to_thread(call_json, url)
    assert str(caught.value) == f"{url}: cannot connect (timed out). Is the gateway running?"


async def test_environment_proxies_are_used_as_urllib_used_them(
    odd_gateway: tuple[str, list[web.Request]],
) -> None:
    """``http_proxy`` carries the call (its credentials as Proxy-Authorization); a host
    ``no_proxy`` lists is called directly."""
    proxy, seen = odd_gateway
    proxied = {"http_proxy": proxy.replace("http://", "http://ops:s3cret@"), "no_proxy": ""}
    code, err = await failover("status", "--url", "http://gateway.invalid:8080", env=proxied)
    assert (code, err) == (0, "")
    (request,) = seen
    assert str(request.url) == "http://gateway.invalid:8080/status.json"
    assert request.headers["proxy-authorization"] == "Basic " + base64.b64encode(
        b"ops:s3cret"
    ).decode("ascii")

    bypass = {"http_proxy": "http://127.0.0.1:9", "no_proxy": "127.0.0.1"}
    code, err = await failover("status", "--url", f"{proxy}/fine", env=bypass)
    assert (code, err) == (0, "")
    assert seen[-1].path == "/fine/status.json"
