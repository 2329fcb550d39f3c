"""SIGTERM handled like Ctrl-C, so a terminated run stops cleanly and says how to resume it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (e.g. a checkpoint write), then act on them.

    A signal in the middle of `torch.save` would otherwise surface as a corrupt-zip RuntimeError.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in pending:
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
