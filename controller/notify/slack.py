"""Slack sender: an incoming webhook, posted with ``requests`` in a worker thread.

``requests`` is blocking, so each post runs in ``asyncio.to_thread`` and the event loop (and with
it every user request) never waits on Slack. The webhook URL is the credential: it is registered
with the log redactor, never printed, and error texts carry only the exception type or Slack's
short error code (``invalid_payload``, ``no_service``, ...).
"""

from __future__ import annotations

import asyncio
from typing import Any

import requests

from controller.notify._secret import Secret, protect
from controller.notify.alert import Alert
from controller.notify.base import SendResult
from controller.notify.messages import LinkTemplates, render_slack
from controller.wire._common import parse_retry_after


class SlackSender:
    """Posts each alert as one message (text fallback + blocks) to an incoming webhook."""

    channel = "slack"
    name = "slack"

    def __init__(self, *, webhook_url: Secret, links: LinkTemplates, timeout: float = 10.0):
        protect(webhook_url)
        self._url = webhook_url
        self._links = links
        self._timeout = timeout
        self._session = requests.Session()

    async def send(self, alert: Alert) -> SendResult:
        payload = render_slack(alert, links=self._links)
        return await asyncio.to_thread(self._post, payload)

    def _post(self, payload: dict[str, Any]) -> SendResult:
        try:
            response = self._session.post(
                self._url.reveal(), json=payload, timeout=self._timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            # The exception text names the URL: report the type only.
            return SendResult.failed(self.channel, type(exc).__name__)
        with response:
            return self._result(response)

    def _result(self, response: requests.Response) -> SendResult:
        status = response.status_code
        if 200 <= status < 300:
            return SendResult.sent(self.channel)
        code = response.text.strip()[:80] or response.reason
        error = f"HTTP {status}: {code}"
        if status == 429:
            wait = parse_retry_after(response.headers)
            return SendResult.failed(self.channel, error, retry_after=wait)
        # 5xx and 408 are Slack's trouble; other 4xx (bad payload, revoked hook) are ours.
        return SendResult.failed(self.channel, error, retryable=status >= 500 or status == 408)

    async def aclose(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return "SlackSender(webhook_url=***)"
