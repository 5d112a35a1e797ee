"""A guard that turns a Spark job that never finishes into an error.

MLlib's ``GaussianMixture`` can loop forever: when EM drives a gaussian's weight towards zero,
its next covariance holds infinities, and the eigen-decomposition in
``MultivariateGaussian.calculateCovarianceConstants`` (netlib-java's translated LAPACK,
``Dsyev`` -> ``Dlascl``, which predates LAPACK's own fix for infinite input) never returns.
The task spins on one core and the fit never ends: a hang, with no error, for the whole run.

:func:`stall_guard` runs a block of Spark work in its own job group and watches that group's
jobs from a daemon thread with Spark's status tracker. A job that has run for longer than
``max(min_seconds, factor x the longest finished job of the block)`` is cancelled, and the block
raises :class:`StalledJobError` instead of waiting forever. In local mode the log also shows
where the stalled task was (:func:`task_stacks`). Each EM iteration is one job of the
same size, so a stalled one stands out against the iterations before it.

A cancelled task that does not check for interruption (the LAPACK loop) keeps its core until
the JVM exits: after a :class:`StalledJobError` the session has one task slot fewer. A
``spark-submit`` job or the command line ends on the error, which ends the JVM.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence

from pyspark import SparkContext

from segmentation.errors import SegmentationError

log = logging.getLogger(__name__)

#: A job of a guarded block may run this long whatever the block's earlier jobs took.
DEFAULT_MIN_SECONDS = 300.0
#: ... or this many times as long as the longest job of the block that finished.
DEFAULT_FACTOR = 20.0
#: How often the status tracker is polled.
POLL_SECONDS = 0.5

_GROUP_KEYS = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")


class StalledJobError(SegmentationError):
    """A Spark job of a guarded block ran far longer than it could take, and was cancelled."""


class _Monitor(threading.Thread):
    """Polls the jobs of one job group; cancels the group when one of them stalls."""

    def __init__(
        self, sc: SparkContext, group: str, what: str, min_seconds: float, factor: float
    ) -> None:
        super().__init__(name=f"stall-guard-{group}", daemon=True)
        self.sc = sc
        self.group = group
        self.what = what
        self.min_seconds = min_seconds
        self.factor = factor
        self.done = threading.Event()
        self.stalled: Optional[str] = None

    def run(self) -> None:
        tracker = self.sc.statusTracker()
        first_seen: Dict[int, float] = {}
        longest = 0.0
        finished = set()
        while not self.done.wait(POLL_SECONDS):
            now = time.monotonic()
            for job_id in tracker.getJobIdsForGroup(self.group):
                info = tracker.getJobInfo(job_id)
                if info is None or job_id in finished:
                    continue
                started = first_seen.setdefault(job_id, now)
                if info.status != "RUNNING":
                    finished.add(job_id)
                    longest = max(longest, now - started)
                    continue
                limit = max(self.min_seconds, self.factor * longest)
                if now - started > limit:
                    self.stalled = (
                        f"{self.what}: Spark job {job_id} ran {now - started:.0f} s, longer than "
                        f"its limit of {limit:.0f} s (the block's longest finished job took "
                        f"{longest:.1f} s); cancelled"
                    )
                    log.error("%s", self.stalled)
                    try:  # a diagnosis: it must not keep the job from being cancelled
                        for stack in task_stacks(self.sc, info.stageIds):
                            log.error("where the stalled task is:\n%s", stack)
                    except Exception:  # any failure to read the stacks
                        log.debug("could not read the stalled task's stack", exc_info=True)
                    self.sc.cancelJobGroup(self.group)
                    return


def task_stacks(sc: SparkContext, stage_ids: Sequence[int], frames: int = 12) -> List[str]:
    """The stack traces of the driver JVM's task threads running ``stage_ids`` (local mode).

    In local mode the executor is the driver JVM, so a stalled task can be seen there: its
    thread's top ``frames`` frames say where it spins (for a degenerate GaussianMixture,
    LAPACK's ``Dlascl``). On a cluster the tasks run in executors, and this returns nothing
    (their stacks are on the Spark UI's Executors tab, "Thread Dump").
    """
    if not str(sc.master).startswith("local"):
        return []
    wanted = tuple(f" in stage {stage}." for stage in stage_ids)
    stacks = []
    traces = sc._jvm.java.lang.Thread.getAllStackTraces()  # type: ignore[union-attr]
    for thread in traces.keySet():
        name = str(thread.getName())
        if not name.startswith("Executor task launch worker") or not any(
            stage in name for stage in wanted
        ):
            continue
        lines = [f"{name} ({thread.getState().toString()})"]
        lines += [f"    at {frame.toString()}" for frame in list(traces.get(thread))[:frames]]
        stacks.append("\n".join(lines))
    return stacks


@contextmanager
def stall_guard(
    sc: SparkContext,
    what: str,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    factor: float = DEFAULT_FACTOR,
    hint: str = "",
) -> Iterator[None]:
    """Run the block's Spark jobs in a fresh job group; cancel them if one stalls.

    Parameters
    ----------
    sc
        The session's ``SparkContext``.
    what
        What the block does, for the job group's description and the error (``"gmm fit, k=4"``).
    min_seconds, factor
        A job is stalled once it has run ``max(min_seconds, factor x longest)`` seconds, where
        ``longest`` is the longest job of the block that finished before it.
    hint
        Appended to the error: what the user can do about it.

    Raises
    ------
    StalledJobError
        If a job stalled (it was cancelled, so the block failed).

    Examples
    --------
    >>> with stall_guard(spark.sparkContext, "gmm fit, k=4"):  # doctest: +SKIP
    ...     model = GaussianMixture(k=4).fit(vectors)
    """
    group = f"segmentation-{uuid.uuid4().hex[:12]}"
    previous = {key: sc.getLocalProperty(key) for key in _GROUP_KEYS}
    sc.setJobGroup(group, what, interruptOnCancel=True)
    monitor = _Monitor(sc, group, what, min_seconds, factor)
    monitor.start()
    try:
        yield
    except Exception as error:
        if monitor.stalled is not None:
            raise StalledJobError(
                f"{monitor.stalled}{'. ' + hint if hint else ''}"
            ) from error
        raise
    finally:
        monitor.done.set()
        monitor.join()
        for key, value in previous.items():
            sc.setLocalProperty(key, value)  # type: ignore[arg-type]  # None unsets it
