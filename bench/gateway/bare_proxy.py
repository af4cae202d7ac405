"""The floor of this stack: an aiohttp server that forwards each request to the upstream with
one shared aiohttp ClientSession and returns the answer (streamed chunk by chunk when the
upstream streams). Nothing else: no auth, no limits, no recording. The gateway benchmark
compares the gateway against it.

    python bench/gateway/bare_proxy.py --upstream http://127.0.0.1:8900 --port 8081
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop
from aiohttp import web

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def make_app(upstream: str) -> web.Application:
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def session_ctx(app: web.Application):
        app[session_key] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            auto_decompress=False,
        )
        yield
        await app[session_key].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with request.app[session_key].request(
            request.method,
            upstream + request.path_qs,
            headers=headers,
            data=body,
        ) as upstream_response:
            out_headers = {k: v for k, v in upstream_response.headers.items() if k.lower() not in HOP_BY_HOP}
            if upstream_response.content_type != "text/event-stream":
                return web.Response(
                    status=upstream_response.status, headers=out_headers, body=await upstream_response.read()
                )
            response = web.StreamResponse(status=upstream_response.status, headers=out_headers)
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(
        make_app(args.upstream.rstrip("/")),
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda *_: print(f"bare proxy listening on http://{args.host}:{args.port}", flush=True),
    )


if __name__ == "__main__":
    main()
