"""`tokentrail mock-upstream`: a fake OpenAI + Anthropic provider for tests, demo and benchmarks."""

from __future__ import annotations

import argparse
import os

from tokentrail.arguments import tcp_port
from tokentrail.errors import CliError

READY_PREFIX = "mock-upstream listening on "
"""Start of the line printed once the port accepts connections; the URL follows it."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "mock-upstream",
        help="run a fake OpenAI + Anthropic provider (tests, demo, benchmarks)",
        description="Serve the OpenAI (/v1/chat/completions, /v1/completions, /v1/embeddings, "
        "/v1/responses, /v1/models) and Anthropic (/v1/messages) wire formats with deterministic "
        "answers and usage; x-mock-* request headers force statuses, latency and usage "
        "(see docs/mock_upstream.md).",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1, TOKENTRAIL_MOCK_UPSTREAM_HOST)")
    parser.add_argument(
        "--port", type=tcp_port, help="TCP port, 0 for any free one (default 8900, TOKENTRAIL_MOCK_UPSTREAM_PORT)"
    )
    parser.add_argument(
        "--workers", type=_workers, help="processes sharing the port (default 1, TOKENTRAIL_MOCK_UPSTREAM_WORKERS)"
    )
    parser.set_defaults(func=_run)


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"not a worker count: {text!r} (1-64)")
    return int(text)


def _run(args) -> int:
    from mock_upstream.server import MockUpstreamError, bind, serve, url_of
    from mock_upstream.settings import MockUpstreamSettings
    from tokentrail.settings import load

    settings = load(
        MockUpstreamSettings,
        mock_upstream_host=args.host,
        mock_upstream_port=args.port,
        mock_upstream_workers=args.workers,
    )
    try:
        sock = bind(settings.mock_upstream_host, settings.mock_upstream_port)
    except MockUpstreamError as exc:
        raise CliError(str(exc)) from None
    workers = settings.mock_upstream_workers
    url = url_of(sock)

    def ready() -> None:
        print(f"{READY_PREFIX}{url} (workers {workers}, pid {os.getpid()})", flush=True)

    serve(sock, workers, on_ready=ready)
    return 0
