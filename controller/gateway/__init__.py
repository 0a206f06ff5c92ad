"""The HTTP gateway: OpenAI- and Anthropic-compatible endpoints with failover behind them.

::

    app = create_app(backend, settings=GatewaySettings(api_keys=("sk-...",)))
    admin = create_admin_app(backend, admin_token=os.environ.get("FAILOVER_ADMIN_TOKEN"))
    await serve(app, "0.0.0.0", 8080, grace=settings.shutdown_grace_seconds, stop=stop_event)

``backend`` is anything implementing :class:`GatewayBackend` (the runtime built from config, or
a test's backend over a real router and fake providers).
"""

from __future__ import annotations

from controller.gateway._app import create_admin_app, create_app
from controller.gateway._auth import ADMIN_TOKEN_ENV
from controller.gateway._count import HEADER_TOKEN_COUNT
from controller.gateway._formats import HEADER_MODEL, HEADER_PROVIDER
from controller.gateway._server import GatewayServer, serve
from controller.gateway._settings import DEFAULT_MAX_BODY_BYTES, GatewaySettings
from controller.gateway.backend import GatewayBackend

__all__ = [
    "ADMIN_TOKEN_ENV",
    "DEFAULT_MAX_BODY_BYTES",
    "HEADER_MODEL",
    "HEADER_PROVIDER",
    "HEADER_TOKEN_COUNT",
    "GatewayBackend",
    "GatewayServer",
    "GatewaySettings",
    "create_admin_app",
    "create_app",
    "serve",
]
