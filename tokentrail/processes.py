"""Child processes the tools start (broker, mock provider, gateway, flows): tie their life to
ours, and stop them gracefully with a bounded wait."""

from __future__ import annotations

import ctypes
import signal
import subprocess

_prctl = ctypes.CDLL(None).prctl  # resolved before any fork: the child only makes the call
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for Popen: ask Linux to SIGTERM the child when its parent dies, so no
    broker or server outlives a killed test run."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(process: subprocess.Popen, timeout: float) -> int:
    """SIGTERM (let it flush), SIGKILL past `timeout`; safe to call twice. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
