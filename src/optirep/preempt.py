"""SIGTERM handling for training processes, importable without torch.

Slurm (and most schedulers) send SIGTERM before killing a job. `checkpoint_on_sigterm()` turns it
into a flag that the training loop polls once per step (`optirep.train.train`): the run writes a
checkpoint and raises `Preempted`, which `optirep.cli.main` turns into exit status 143; rerunning
the same command resumes exactly. Kept apart from `optirep.train` so that the CLI can install the
handler, and recognise a finished run, before torch is imported (`optirep.launch`).
"""

from __future__ import annotations

import signal
import threading

SIGTERM_RECEIVED = threading.Event()


class Preempted(RuntimeError):
    """Training left early on SIGTERM, checkpointed; rerunning the same command resumes exactly."""


def checkpoint_on_sigterm() -> None:
    """Make SIGTERM set `SIGTERM_RECEIVED` instead of ending the process. Main thread only."""
    signal.signal(signal.SIGTERM, lambda signum, frame: SIGTERM_RECEIVED.set())
