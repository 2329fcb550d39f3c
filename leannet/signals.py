"""SIGTERM handled like Ctrl-C, so a terminated run stops cleanly and says how to resume it."""

from __future__ import annotations

import signal
from types import FrameType

_received: list[int] = []


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Make SIGTERM raise KeyboardInterrupt (Lightning then stops the fit loop as for Ctrl-C)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def exit_code() -> int:
    """The shell's code for the signal that interrupted us: 143 for SIGTERM, 130 for SIGINT (Ctrl-C)."""
    return 128 + (_received[-1] if _received else int(signal.SIGINT))
