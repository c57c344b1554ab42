"""The module's jobs at the two moments nobody else watches them: after Cancel, and at quit.

*Cancel* must not freeze Slicer while a process tree dies, so a cancelled job is handed here and
polled by the panel's timer (:meth:`JobList.tick`) until its kill is complete and its temporary
folder gone. When Slicer quits, every job still running, also those a script started with the
logic's ``startSegmentation`` or ``modelCommand`` and never polled, is stopped and its folder
removed (:meth:`JobList.stop_all`, connected to the application's ``aboutToQuit``). A job is a
``SegmentationJob``, an ``EngineProcess`` or a ``TrainingJob``: each has ``running``,
``cancelled``, ``poll()`` and ``cancel()``. Stdlib only: tested with real child processes.
"""

from __future__ import annotations

import time

__all__ = ["JobList"]


def _running(job) -> bool:
    return bool(getattr(job, "running", False))


def _leftover(job) -> bool:
    """Still running, or a temporary folder not removed yet (a script never called finish)."""
    return _running(job) or getattr(job, "folder", None) is not None


class JobList:
    """The jobs one logic started; finished ones are dropped as new ones arrive."""

    def __init__(self) -> None:
        self._jobs: list = []

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job):
        """Keep ``job`` until it has ended and left nothing behind; returns it."""
        self._jobs = [each for each in self._jobs if _leftover(each)]
        if job not in self._jobs:
            self._jobs.append(job)
        return job

    def cancel(self, job) -> None:
        """Cancel ``job`` without waiting; :meth:`tick` completes it."""
        job.cancel()
        self.add(job)

    @property
    def stopping(self) -> bool:
        """Whether a cancelled job's process tree is still going (the timer must keep ticking)."""
        return any(getattr(job, "cancelled", False) and _running(job) for job in self._jobs)

    def tick(self) -> None:
        """From the panel's timer: poll the cancelled jobs, so their kill completes and their
        folders go. Jobs nobody cancelled are their owner's to poll."""
        for job in self._jobs:
            if getattr(job, "cancelled", False) and _running(job):
                job.poll()
        self._jobs = [each for each in self._jobs if _leftover(each)]

    def stop_all(self, grace_s: float = 3.0) -> int:
        """Slicer is quitting: cancel every job still running, give them ``grace_s`` seconds
        to end, kill what is left, and remove their temporary folders. Returns how many jobs
        were running."""
        jobs = list(self._jobs)
        running = [job for job in jobs if _running(job)]
        for job in running:
            job.cancel()
        _poll_while_running(running, grace_s)
        for job in running:
            kill = getattr(job, "kill", None)
            if kill is not None and _running(job):
                kill()
        _poll_while_running(running, 2.0)
        for job in jobs:
            cleanup = getattr(job, "cleanup", None)
            if cleanup is not None:
                cleanup()
        self._jobs = [each for each in self._jobs if _leftover(each)]
        return len(running)


def _poll_while_running(jobs: list, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(_running(job) for job in jobs) and time.monotonic() < deadline:
        for job in jobs:
            job.poll()
        time.sleep(0.02)
