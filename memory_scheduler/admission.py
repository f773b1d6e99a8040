"""Admission: the one step between "this occurrence runs" and "a worker calls its job".

Every run passes :meth:`Admission.admit`, with no lock held: the dispatcher's runs
(one slice of an instant at a time, through the claimer thread when there is a run
store), ``run_pending()``'s and ``run_job_now()``'s. Runs it does not return must be
released by it. Without a run store every run is admitted; with one,
:class:`~memory_scheduler.cluster.Cluster` claims the occurrences here, so that
several processes run each once.
"""

from __future__ import annotations

from typing import List, Optional

from .events import Outbox
from .runs import Run

__all__ = ["Admission"]


class Admission:
    """Admits every run: one process, no run store."""

    def admit(self, runs: List[Run], outbox: Optional[Outbox] = None, *,
              inline: bool = False) -> List[Run]:
        """The runs that may start, in order (no lock held). What users should hear
        about goes into ``outbox``, which the caller delivers."""
        return runs
