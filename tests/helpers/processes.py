"""Helpers for tests that start and kill worker processes."""

from __future__ import annotations

import os
import signal
import time

import pytest


def sigkill_when(proc, ready, timeout: float, what: str) -> None:
    """Kills ``proc`` with SIGKILL as soon as ``ready()`` holds (polled); fails the test with ``what`` after
    ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(what)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
