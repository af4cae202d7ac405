"""Cost of the request-shape context hash per request, beside the JSON parse the gateway already
does for `model` (the baseline), on the same bodies in the same run.

    .venv/bin/python bench/gateway/context_hash.py [--rounds 20000]

Bodies: a short chat call, a chat call with a 4 KB system prompt, 3 tools and JSON output, and a
60-turn conversation (the hash reads only the leading system messages, so its cost must not grow
with the conversation).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.context_hash import context_hash

CHAT = "/v1/chat/completions"
SYSTEM = "You are the support bot of a large retailer. " * 90  # ~4 KB
TOOLS = [{"type": "function", "function": {"name": f"tool_{n}", "parameters": {"type": "object"}}} for n in range(3)]
BODIES: dict[str, dict[str, Any]] = {
    "short chat": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
    "4 KB system + tools": {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "where is my order?"}],
        "tools": TOOLS,
        "response_format": {"type": "json_object"},
    },
    "60-turn conversation": {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": SYSTEM}]
        + [{"role": "user" if n % 2 else "assistant", "content": "some earlier turn " * 20} for n in range(60)],
    },
}


def per_call_us(action: Callable[[], object], rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        action()
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    rounds = parser.parse_args().rounds
    print(f"{'body':24} {'bytes':>7} {'parse µs':>9} {'hash µs':>8} {'hash/parse':>10}")
    for name, body in BODIES.items():
        raw = orjson.dumps(body)
        parse = per_call_us(lambda raw=raw: orjson.loads(raw), rounds)
        digest = per_call_us(lambda body=body: context_hash(CHAT, body), rounds)
        print(f"{name:24} {len(raw):7,} {parse:9.2f} {digest:8.2f} {digest / parse:10.2f}")


if __name__ == "__main__":
    main()
