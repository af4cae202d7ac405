from typing import Any

def write_frame(buffer: Any, offset: int, kind: int, flags: int, key: bytes | None, value: bytes, /) -> int:
    """The frame of (key, value) written into the writable `buffer` at `offset`; its length.
    ValueError if it does not fit (gateway/_frames.c)."""
