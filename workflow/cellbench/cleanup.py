"""Turn termination signals into an exception, so that clean-up code runs.

``scancel`` and a SLURM time limit send SIGTERM (SIGKILL follows after the
cluster's ``KillWait``, 30 s by default); closing a terminal sends SIGHUP. By
default Python dies on either at once, so the ``except BaseException`` blocks in
:func:`cellbench.io.atomic_path` / :func:`cellbench.io.atomic_dir` never run and
half-written temporaries stay behind. :func:`install_termination_handlers` makes
both signals raise :class:`Terminated` in the main thread instead: clean-up runs,
and the process still exits with status ``128 + signal`` (143 for SIGTERM, 129
for SIGHUP), as a shell reports a process killed by that signal.

Temporaries of runs killed by SIGKILL (or anything else no handler can catch)
are removed by the next write to the same target; see :func:`cellbench.io.atomic_path`.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["TERMINATION_SIGNALS", "Terminated", "install_termination_handlers"]

#: Signals turned into :class:`Terminated` (those missing on the platform are skipped).
TERMINATION_SIGNALS = ("SIGTERM", "SIGHUP")


class Terminated(SystemExit):
    """The process received a termination signal; the exit status is ``128 + signum``.

    A :class:`SystemExit` subclass, so ``except Exception`` handlers do not
    swallow it, ``except BaseException`` clean-up runs, and an uncaught one ends
    the process quietly with that status.

    Parameters
    ----------
    signum : int
        The signal received.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name} (exit status {self.code})"


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def install_termination_handlers() -> tuple[str, ...]:
    """Make SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    Idempotent. A signal whose handler is not the default one is left alone, so
    a SIGHUP ignored by ``nohup`` stays ignored and handlers installed by other
    code are kept. Called outside the main thread (where Python cannot set
    signal handlers) it does nothing.

    Returns
    -------
    tuple of str
        The names of the signals that now raise :class:`Terminated`, e.g.
        ``("SIGTERM", "SIGHUP")``; empty outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return ()
    active = []
    for name in TERMINATION_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        current = signal.getsignal(signum)
        if current is signal.SIG_DFL:
            signal.signal(signum, _raise_terminated)
        elif current is not _raise_terminated:
            continue
        active.append(name)
    return tuple(active)
