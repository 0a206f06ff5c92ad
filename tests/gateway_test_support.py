"""Shared pieces of the raw-HTTP gateway tests: the front-format paths and the fixtures.

``env`` is a running gateway over fake providers (see ``tests.gateway_support``), ``http`` a plain
aiohttp client session; test modules re-export both with ``from ... import env as env``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.gateway_support import GatewayEnv, gateway_env

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


@pytest.fixture
async def env() -> AsyncIterator[GatewayEnv]:
    async with gateway_env() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
