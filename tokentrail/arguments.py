"""argparse types shared by the sub-commands of every part (kernel: imports nothing above it)."""

from __future__ import annotations

import argparse


def tcp_port(text: str) -> int:
    """A `--port` value: 0-65535, 0 meaning any free port. argparse names the flag in the error."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r} (0-65535, 0 picks a free one)")
    return int(text)
