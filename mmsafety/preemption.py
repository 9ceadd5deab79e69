"""Save-then-stop on the signals a cluster sends before it ends a job.

SLURM warns a job before its time limit with SIGUSR2 (`hydra.launcher.signal_delay_s`; submitit's handler
then requeues the job and exits) and preempts it with SIGTERM (SIGKILL follows after `KillWait`). A long
loop that can save its state wraps itself in `SaveOnSignal`: while it runs, those signals are held until
the loop reaches its next step boundary, where it saves the state it reached and only then hands the signal
to whoever handled it before (submitit's requeue, or the default: the process ends). So a requeued job
resumes from the step it reached, not from its last periodic save, and the saved state is always one a
step boundary would write: the resumed run takes exactly the steps an uninterrupted one takes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR2", None), signal.SIGTERM) if s is not None)


class SaveOnSignal:
    """`with SaveOnSignal() as held:` ... `if held.pending: save(); held.release()` at each step boundary.

    Outside the main thread (signal handlers can only be set there) it holds nothing and `pending` stays
    False: the loop runs as it would without it."""

    def __init__(self, signals=SIGNALS):
        self.signals = signals
        self._previous: dict[int, object] = {}
        self._received: list[int] = []

    @property
    def pending(self) -> bool:
        return bool(self._received)

    @property
    def held(self) -> str:
        """The held signals' names, e.g. 'SIGUSR2' ('' when none is held)."""
        return ", ".join(signal.Signals(s).name for s in self._received)

    def stop_here(self, save) -> None:
        """At a boundary that leaves nothing half done (a step, a written sample): if a signal is held,
        `save()` the state reached, then hand the signal on (usually the process ends there)."""
        if self._received:
            save()
            self.release()

    def __enter__(self) -> SaveOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self._received.append(signum)

    def release(self) -> None:
        """Restore the previous handlers and deliver the held signals to them (submitit requeues and
        exits; the default handler ends the process)."""
        received, self._received = self._received, []
        self._restore()
        for signum in received:
            handler = signal.getsignal(signum)
            if callable(handler):
                try:
                    handler(signum, None)
                except subprocess.CalledProcessError as e:
                    if not _requeue_cut_short(e):
                        raise
                    sys.exit(-1)  # what submitit does once the job is requeued
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        # A signal that came after the last step boundary (or while the loop was failing): nothing more
        # can be saved here, so it goes to its handler now; the cluster still wants the job gone.
        self.release()


def _requeue_cut_short(error: subprocess.CalledProcessError) -> bool:
    """submitit's handler runs `scontrol requeue JOB` and waits for it; SLURM, requeueing, terminates the
    job step, `scontrol` with it, sometimes before it exits. The requeue happened: the job must end as
    after a clean requeue, not report the killed `scontrol` as its result (the sweep would call it failed)."""
    return list(error.cmd[:2]) == ["scontrol", "requeue"] and error.returncode == -signal.SIGTERM
