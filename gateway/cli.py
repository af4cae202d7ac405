"""`tokentrail gateway [--host 127.0.0.1] [--port 8080]`: run the gateway (uvloop, one process)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run the LLM gateway (OpenAI + Anthropic routes, identity, limits, recording)",
        description="Point your OpenAI/Anthropic SDK base_url here and send your tokentrail key as "
        "the API key. Configuration by environment: see docs/gateway.md.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1, TOKENTRAIL_GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="TCP port (default 8080, TOKENTRAIL_GATEWAY_PORT)")
    parser.set_defaults(func=_run)


async def _freeze_startup_objects(app: web.Application) -> None:
    """Move everything allocated at start-up out of the garbage collector's view, so its
    full collections (and the latency spikes they cause) only walk per-request garbage."""
    import gc

    gc.collect()
    gc.freeze()


def _run(args: argparse.Namespace) -> int:
    import logging

    import uvloop
    from aiohttp import web

    from gateway import logs
    from gateway.app import create_app
    from gateway.settings import GatewaySettings
    from tokentrail.broker.admin import require_credentials
    from tokentrail.settings import CoreSettings, load

    settings = load(GatewaySettings, gateway_host=args.host, gateway_port=args.port)
    core = load(CoreSettings)
    require_credentials(core)
    logs.configure(settings.log_level)
    app = create_app(settings, core)
    app.on_startup.append(_freeze_startup_objects)
    log = logging.getLogger("tokentrail.gateway")
    for provider, credential in (("openai", settings.openai_api_key), ("anthropic", settings.anthropic_api_key)):
        if credential is None:
            log.warning("no %s credential set: requests go upstream without one", provider)
    uvloop.install()
    host, port = settings.gateway_host, settings.gateway_port
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=lambda *_: log.info("gateway listening on http://%s:%d (kafka %s)", host, port, core.bootstrap()),
    )
    return 0
