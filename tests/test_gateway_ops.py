"""The gateway over raw HTTP, its operational side: client keys, probes, metrics, the model list,
the status page, admin and spans.

Everything is real: the gateway listens on 127.0.0.1, routes through a real Router to real fake
providers, and the requests below are plain aiohttp client calls.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from controller.gateway import GatewaySettings
from controller.providers.fake import FaultMode
from tests.gateway_support import (
    GatewayEnv,
    assert_still_serving,
    gateway_env,
    get,
    hello,
    hello_anthropic,
    post,
    wait_for,
)
from tests.gateway_test_support import CHAT, MESSAGES
from tests.gateway_test_support import env as env  # fixtures: the aliases re-export them for pytest
from tests.gateway_test_support import http as http

ADMIN = {"Authorization": "Bearer admin-secret-token"}


# ---------------------------------------------------------------- client keys


async def test_client_keys_are_required_and_never_echoed(http: aiohttp.ClientSession) -> None:
    settings = GatewaySettings(api_keys=("sk-gw-one", "sk-gw-two"))
    assert "sk-gw" not in repr(settings)
    async with gateway_env(settings=settings) as env:
        status, body, _ = await post(http, env.url + CHAT, hello())
        assert status == 401
        assert body["error"]["code"] == "invalid_api_key"
        wrong = {"Authorization": "Bearer sk-gw-guess"}
        status, body, _ = await post(http, env.url + MESSAGES, hello_anthropic(), headers=wrong)
        assert status == 401
        assert body["error"]["type"] == "authentication_error"
        assert "sk-gw-guess" not in json.dumps(body)
        ok = {"Authorization": "Bearer sk-gw-two"}
        assert (await post(http, env.url + CHAT, hello(), headers=ok))[0] == 200
        ok = {"x-api-key": "sk-gw-one"}
        assert (await post(http, env.url + MESSAGES, hello_anthropic(), headers=ok))[0] == 200
        assert (await get(http, env.url + "/v1/models"))[0] == 401
        # The Anthropic SDKs list models at the same path: their header picks their format.
        status, body = await get(http, env.url + "/v1/models", headers={"anthropic-version": "1"})
        assert (status, body["error"]["type"]) == (401, "authentication_error")
        assert (await get(http, env.url + "/healthz"))[0] == 200  # probes need no key
        assert env.primary.requests == 2


# ---------------------------------------------------------------- probes, metrics, models


async def test_healthz_and_readyz(env: GatewayEnv, http: aiohttp.ClientSession) -> None:
    assert await get(http, env.url + "/healthz") == (200, {"status": "ok"})
    assert (await get(http, env.url + "/readyz"))[0] == 200
    env.backend.readiness = (False, "tier frontier has no usable provider")
    reason = "tier frontier has no usable provider"
    assert await get(http, env.url + "/readyz") == (503, {"status": "not ready", "reason": reason})
    assert (await get(http, env.url + "/healthz"))[0] == 200  # not ready is not dead


async def test_metrics_expose_the_backend_exposition(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    await assert_still_serving(env, http)
    async with http.get(env.url + "/metrics") as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await answer.text()
    expected = (
        'failover_requests_total{tier="frontier",outcome="served",served_by="primary-openai"} 1'
    )
    assert expected in text


async def test_models_list_in_openai_format(env: GatewayEnv, http: aiohttp.ClientSession) -> None:
    _, body = await get(http, env.url + "/v1/models")
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == sorted(["claude", "claude-test", "frontier", "gated", "gated-test", "gpt-test"])
    assert all(m["object"] == "model" for m in body["data"])
    assert (await get(http, env.url + "/v1/models/gpt-test"))[1]["id"] == "gpt-test"
    assert (await get(http, env.url + "/v1/models/nope"))[0] == 404


async def test_status_json_and_page(env: GatewayEnv, http: aiohttp.ClientSession) -> None:
    _, doc = await get(http, env.url + "/status.json")
    assert [t["name"] for t in doc["tiers"]] == ["frontier", "claude", "gated"]
    assert doc["tiers"][0]["serving"] == "primary-openai"
    async with http.get(env.url + "/status") as answer:
        assert answer.content_type == "text/html"
        page = await answer.text()
    assert "status.json" in page
    assert "<script src" not in page
    assert "http://" not in page
    assert "https://" not in page


# ---------------------------------------------------------------- admin


async def test_admin_requires_its_token(env: GatewayEnv, http: aiohttp.ClientSession) -> None:
    async with http.get(env.admin_url + "/admin/state") as answer:
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = {"Authorization": "Bearer admin-secret-tokeN"}
    async with http.get(env.admin_url + "/admin/state", headers=wrong) as answer:
        assert answer.status == 401
        assert "admin-secret" not in await answer.text()
    status, state = await get(http, env.admin_url + "/admin/state", headers=ADMIN)
    assert status == 200
    assert state["kill_switch"]["active"] is False
    assert (await get(http, env.url + "/admin/state", headers=ADMIN))[0] == 404  # not public


async def test_admin_without_a_token_is_off(http: aiohttp.ClientSession) -> None:
    async with gateway_env(admin_token=None) as env:
        status, body = await get(http, env.admin_url + "/admin/state", headers=ADMIN)
        assert status == 403
        assert "FAILOVER_ADMIN_TOKEN" in body["error"]
        async with http.post(env.admin_url + "/admin/drill", json={}) as answer:
            assert answer.status == 403
        assert env.backend.drills == []


async def test_drill_calls_the_backend(env: GatewayEnv, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(
        http,
        env.admin_url + "/admin/drill",
        {"provider": "primary-openai", "seconds": 30},
        headers=ADMIN,
    )
    assert status == 200
    assert body == {"ok": True, "provider": "primary-openai", "seconds": 30.0, "drill": "started"}
    assert env.backend.drills == [("primary-openai", 30.0)]
    assert env.primary.fault.mode is FaultMode.ERROR_503
    status, _answer, headers = await post(http, env.url + CHAT, hello())
    assert status == 200
    assert headers["x-failover-provider"] == "backup-anthropic"  # the drill is a real outage


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"provider": "nobody", "seconds": 5}, 404),
        ({"provider": "primary-openai", "seconds": -1}, 400),
        ({"provider": "primary-openai", "seconds": True}, 400),
        ({"provider": "primary-openai"}, 400),
        ({"seconds": 5}, 400),
        (b"{oops", 400),
    ],
)
async def test_bad_drills_are_refused(
    env: GatewayEnv, http: aiohttp.ClientSession, body: Any, status: int
) -> None:
    got, answer, _ = await post(http, env.admin_url + "/admin/drill", body, headers=ADMIN)
    assert got == status
    assert answer["error"]
    assert env.backend.drills == []


# ---------------------------------------------------------------- spans


async def test_server_span_is_the_parent_of_the_route_span(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    await assert_still_serving(env, http)

    def spans_by_name() -> dict[str, Any]:
        return {s.name: s for s in env.exporter.get_finished_spans()}

    await wait_for(lambda: "failover.route" in spans_by_name())
    spans = spans_by_name()
    server = spans["POST /v1/chat/completions"]
    route = spans["failover.route"]
    assert server.kind is SpanKind.SERVER
    attrs = dict(server.attributes or {})
    assert attrs["http.request.method"] == "POST"
    assert attrs["url.path"] == CHAT
    assert attrs["http.route"] == CHAT
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == env.server.port
    assert route.parent is not None
    assert server.context is not None
    assert route.context is not None
    assert route.parent.span_id == server.context.span_id
    assert route.context.trace_id == server.context.trace_id
    assert server.status.status_code is StatusCode.UNSET


async def test_server_span_of_a_5xx_is_an_error(
    env: GatewayEnv, http: aiohttp.ClientSession
) -> None:
    env.primary.set_fault(FaultMode.ERROR_503)
    env.backup.set_fault(FaultMode.ERROR_503)
    status, _, _ = await post(http, env.url + MESSAGES, hello_anthropic())
    assert status == 503
    (server,) = [s for s in env.exporter.get_finished_spans() if s.name == "POST /v1/messages"]
    assert server.status.status_code is StatusCode.ERROR
    assert dict(server.attributes or {})["error.type"] == "503"
