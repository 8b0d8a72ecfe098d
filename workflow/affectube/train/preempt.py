"""Preemption: turn SIGTERM/SIGUSR1 into a flag the training loop polls once per step.

A scheduler ends a job with a signal before killing it: SLURM sends SIGTERM on
preemption, time limit or ``scancel`` (then SIGKILL after ``KillWait``, 30 s by
default), and ``sbatch --signal=[B:]SIG@seconds`` sends SIG that many seconds before
the time limit. :func:`install` replaces the default action of those signals (die at
once) with setting a flag; the training loop checks :func:`requested` after every
optimizer step (all ranks agree through an all-reduce), writes a checkpoint and exits
with :data:`EXIT_PREEMPTED`. The retried or requeued job resumes from that checkpoint.

Under Snakemake's SLURM executor use SIGTERM (``--signal=TERM@600``, as in
``slurm/profile.yaml``): the Snakemake process that runs the rule inside the job
handles SIGTERM by waiting for the running rule, but dies at once on SIGUSR1, and the
job would end while the trainer is still writing its checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Callable, Iterable

log = logging.getLogger(__name__)

#: exit status of a run that stopped on a preemption signal after writing its checkpoint
#: (EX_TEMPFAIL from sysexits.h: "temporary failure, try again")
EXIT_PREEMPTED = 75
DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_lock = threading.Lock()
_received: list[int] = []  # signal numbers, in arrival order
_previous: dict[int, object] = {}  # signal -> handler before install()


def _handler(signum: int, frame: FrameType | None) -> None:
    first = not _received
    _received.append(signum)
    if first:
        # runs in the main thread between bytecodes (Python signal semantics), so logging is safe
        log.warning("received %s: will write a checkpoint and stop after the current step", signal.Signals(signum).name)


def install(signals: Iterable[int] = DEFAULT_SIGNALS) -> bool:
    """Catch ``signals`` (default SIGTERM and SIGUSR1); idempotent.

    Returns False (and changes nothing) outside the main thread, where Python cannot set
    signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    with _lock:
        for sig in signals:
            if sig in _previous:
                continue
            _previous[sig] = signal.signal(sig, _handler)
    return True


def uninstall() -> None:
    """Restore the handlers that were there before :func:`install`."""
    with _lock:
        for sig, old in list(_previous.items()):
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
            del _previous[sig]


def requested() -> bool:
    """True once one of the installed signals has arrived."""
    return bool(_received)


def received() -> str | None:
    """Name of the first signal that arrived (``"SIGTERM"``), or None."""
    return signal.Signals(_received[0]).name if _received else None


def reset() -> None:
    """Forget received signals (tests, or a loop that handled one and goes on)."""
    _received.clear()


def request(signum: int = signal.SIGTERM) -> None:
    """Set the flag as if ``signum`` had arrived (e.g. a job that is about to run out of time)."""
    _handler(signum, None)


def checker(signals: Iterable[int] = DEFAULT_SIGNALS) -> Callable[[], bool]:
    """:func:`install` and return :func:`requested`: ``stop = preempt.checker()`` before a loop."""
    install(signals)
    return requested
