"""Baseline for bench/mock_upstream/run.py: plain aiohttp (on uvloop) answering the route wrk
hits with the very bytes the mock returns, so the ratio measures the server, not the reply."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import uvloop
from aiohttp import web

from mock_upstream import replies

POST_LUA = Path(__file__).with_name("post.lua")


def request_body() -> bytes:
    """The JSON body post.lua sends (one source of truth for both servers)."""
    return re.search(r"wrk\.body = '(.*)'", POST_LUA.read_text()).group(1).encode()


def build_app() -> web.Application:
    reply = replies.reply("POST", "/v1/chat/completions", {}, request_body())
    headers = {name: value for name, value in reply.headers if name != "content-type"}

    async def chat_completions(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=reply.body, status=reply.status, headers=headers, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/healthz", lambda request: web.json_response({"status": "ok"}))
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        build_app(),
        host="127.0.0.1",
        port=args.port,
        loop=uvloop.new_event_loop(),
        print=lambda *_: print(f"aiohttp baseline listening on http://127.0.0.1:{args.port}", flush=True),
        access_log=None,
        shutdown_timeout=1.0,
    )
