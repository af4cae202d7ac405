"""`tokentrail gateway [--host 127.0.0.1] [--port 8080]`: run the gateway (uvloop, one process).

The listening socket is bound before anything else starts, so a busy port or a bad address is
one line naming the address and where it came from, not a traceback after start-up. SIGTERM
and Ctrl-C stop it cleanly (exit 0): connections are closed, queued records are delivered or
spooled.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
from typing import TYPE_CHECKING

from tokentrail.arguments import tcp_port
from tokentrail.errors import CliError

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
    parser.add_argument(
        "--port", type=tcp_port, help="TCP port, 0 for any free one (default 8080, TOKENTRAIL_GATEWAY_PORT)"
    )
    parser.set_defaults(func=_run)


async def _freeze_startup_objects(app: web.Application) -> None:
    """Move everything allocated at start-up out of the garbage collector's view, so its
    full collections (and the latency spikes they cause) only walk per-request garbage."""
    import gc

    gc.collect()
    gc.freeze()


def listen(host: str, port: int, source: str) -> socket.socket:
    """The bound, listening socket; CliError (one line, naming where the port came from) if
    the OS refuses it."""
    try:
        return socket.create_server((host, port), backlog=1024)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = ": another process listens there; pick another port" if exc.errno == errno.EADDRINUSE else ""
        raise CliError(f"cannot listen on {host}:{port} (port from {source}): {reason}{hint}") from None


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
    logs.configure(settings.log_level)
    host, port = settings.gateway_host, settings.gateway_port
    source = "--port" if args.port is not None else "TOKENTRAIL_GATEWAY_PORT or its default"
    sock = listen(host, port, source)
    require_credentials(core)
    port = sock.getsockname()[1]
    app = create_app(settings, core)
    app.on_startup.append(_freeze_startup_objects)
    log = logging.getLogger("tokentrail.gateway")
    for provider, credential in (("openai", settings.openai_api_key), ("anthropic", settings.anthropic_api_key)):
        if credential is None:
            log.warning("no %s credential set: requests go upstream without one", provider)
    uvloop.install()
    web.run_app(
        app,
        sock=sock,
        access_log=None,
        print=lambda *_: log.info("gateway listening on http://%s:%d (kafka %s)", host, port, core.bootstrap()),
    )
    log.info("gateway stopped")
    return 0
