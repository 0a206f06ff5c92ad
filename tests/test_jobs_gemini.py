"""Triage on the Gemini front, through the official google-genai SDK: while the tier is
degraded, drop is refused at once (Google's 503 with Retry-After), an unknown priority is
Google's 400 naming the allowed values, defer is answered 202 and kept; after recovery the job
is replayed (the model from the path it came on) and its answer, in Gemini's shape, fetched with
the same client key: as a bearer token, or the Gemini way (``x-goog-api-key``, ``?key=``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import errors, types

from tests.test_jobs_gateway import KEY_A, KEY_B, PRIORITY, REPLY, Env, _job, triage_env

pytestmark = pytest.mark.filterwarnings(  # the SDK's transport subclasses aiohttp's session
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)


def _gemini(env: Env, key: str = KEY_A) -> genai.Client:
    options = types.HttpOptions(
        base_url=env.url,
        api_version="v1beta",
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key=key, http_options=options)


async def _job_google(env: Env, job_id: str, key: str, way: str) -> tuple[int, Any]:
    """GET a job with the key in ``x-goog-api-key`` (what the google-genai SDK sends) or in
    ``?key=`` (Google's other way)."""
    url = f"{env.url}/v1/failover/jobs/{job_id}"
    headers = {"x-goog-api-key": key} if way == "header" else {}
    params = {"key": key} if way == "query" else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=headers, params=params) as answer,
    ):
        return answer.status, await answer.json()


def _with(priority: str) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(http_options=types.HttpOptions(headers={PRIORITY: priority}))


async def test_the_gemini_front_is_triaged_and_its_deferred_job_replayed(tmp_path: Path) -> None:
    async with triage_env(tmp_path) as env:
        client = _gemini(env)
        env.outage()
        attempts_before = len(env.recorder.attempts)
        with pytest.raises(errors.ServerError) as dropped:
            await client.aio.models.generate_content(
                model="frontier", contents="now or never", config=_with("drop")
            )
        assert dropped.value.code == 503
        assert "priority is drop" in (dropped.value.message or "")
        with pytest.raises(errors.ClientError) as unknown:
            await client.aio.models.generate_content(
                model="frontier", contents="hi", config=_with("urgent")
            )
        assert unknown.value.code == 400
        assert "allowed: critical, defer, drop" in (unknown.value.message or "")
        assert len(env.recorder.attempts) == attempts_before  # none reached a provider

        # The SDK takes any status but 200 for an error: a deferral reaches its caller as an
        # APIError with code 202 whose details are the job document.
        with pytest.raises(errors.APIError) as deferred:
            await client.aio.models.generate_content(
                model="frontier", contents="whenever you can", config=_with("defer")
            )
        assert deferred.value.code == 202
        job = deferred.value.details
        job_id = job["id"]
        assert (job["status"], job["url"]) == ("queued", f"/v1/failover/jobs/{job_id}")
        assert len(env.recorder.attempts) == attempts_before  # kept, not sent

        critical = await client.aio.models.generate_content(model="frontier", contents="hi")
        assert critical.text == REPLY  # no header, a critical tier: served by the backup

        env.recover()
        await env.replay()
        status, doc = await _job(env, job_id)  # the same key, presented as a bearer token
        assert status == 200
        assert (doc["status"], doc["result_status"], doc["model"]) == ("done", 200, "frontier")
        parts = doc["result"]["candidates"][0]["content"]["parts"]
        assert parts[0]["text"] == REPLY  # the caller's format: Gemini's
        assert (await _job(env, job_id, KEY_B))[0] == 404
        # ... and the Gemini way, as the google-genai SDK presents its key (and ?key=)
        for way in ("header", "query"):
            status, fetched = await _job_google(env, job_id, KEY_A, way)
            assert (status, fetched["id"], fetched["status"]) == (200, job_id, "done")
            assert (await _job_google(env, job_id, KEY_B, way))[0] == 404  # another key's job
        status, refused = await _job_google(env, job_id, "not-a-key", "header")
        assert status == 401
        assert refused["error"]["status"] == "UNAUTHENTICATED"  # Google's shape
        last = env.recorder.routes[-1]
        assert (last.tier, last.served_by) == ("frontier", "primary-openai")
