"""A fast, deterministic fake OpenAI + Anthropic provider (docs/architecture.md, docs/mock_upstream.md).

- `replies`: what is answered (pure functions, the wire shapes).
- `server`: the raw asyncio/uvloop/httptools HTTP server; `start_mock_in_thread` for in-process use.
- `process`: `spawn_mock_upstream()`, the mock as a child process on its own core.
- `cli`: `tokentrail mock-upstream`.
"""
