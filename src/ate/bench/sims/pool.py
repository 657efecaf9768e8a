"""Worker processes that outlive one evaluation call: `WorkerPool`.

A per-call pool pays its start-up on every call (spawn, import torch and the simulator, build envs:
about 15 s on 2 cores); a benchmark run makes dozens of evaluation calls. A WorkerPool starts its
workers once, on first use, and keeps them (and whatever they cached in their `state` dict, e.g. envs)
until `close()`. Leaving its `with` block closes it, also on an error or Ctrl-C; workers ignore SIGINT
(the main process stops them) and are daemonic, so they never outlive this process.

Errors: an exception raised by a job is sent back and re-raised here as itself (ATEError subclasses keep
their class and one-line message); anything that cannot be pickled becomes an EvaluationError. A worker
that dies (segfault, out of memory) raises EvaluationError naming the jobs that were running.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import pickle
import queue
import signal
from collections.abc import Callable, Iterable, Iterator

from ate.errors import EvaluationError

_STATE: dict = {}  # a worker process's state, kept between jobs


def _close_state(state: dict) -> None:
    for value in state.values():
        if callable(getattr(value, "close", None)):
            value.close()
    state.clear()


def _portable(exc: BaseException) -> BaseException:
    """exc if it survives pickling (what the queue does), else an EvaluationError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return EvaluationError(f"{type(exc).__name__}: {exc}")


def _worker_main(tasks, results) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _STATE["worker"] = True
    while (msg := tasks.get()) is not None:
        job, fn, args = msg
        try:
            results.put((job, True, fn(_STATE, *args)))
        except Exception as exc:
            results.put((job, False, _portable(exc)))
    _close_state(_STATE)


class WorkerPool:
    """`workers` spawned processes running `fn(state, *args)` jobs; workers <= 1 runs jobs inline.

    state: a dict private to each worker process (inline: to this pool), kept across calls, so a job can
    cache expensive objects in it; `state["worker"]` is True in a worker process. Objects in it with a
    `close()` method are closed when the pool closes.
    """

    def __init__(self, workers: int = 2):
        self.workers = max(1, int(workers))
        self._procs: list = []
        self._tasks = self._results = None
        self._jobs = itertools.count()
        self._inline_state: dict = {"worker": False}

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        if self._procs:
            return
        ctx = mp.get_context("spawn")  # MuJoCo / torch state must not be forked
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        self._procs = [ctx.Process(target=_worker_main, args=(self._tasks, self._results), daemon=True,
                                   name=f"ate-eval-{i}") for i in range(self.workers)]
        for p in self._procs:
            p.start()

    def map_unordered(self, fn: Callable, arg_tuples: Iterable[tuple], describe: Callable[[tuple], str] = repr
                      ) -> Iterator:
        """Yield fn(state, *args) for every args tuple, in completion order. fn and args must be picklable
        (module-level functions, plain data, policy factories that load weights from a path).
        describe(args) names a job in the error raised when a worker dies."""
        arg_tuples = list(arg_tuples)
        if self.workers <= 1:
            for args in arg_tuples:
                yield fn(self._inline_state, *args)
            return
        self._start()
        pending = {}
        for args in arg_tuples:
            job = next(self._jobs)
            pending[job] = args
            self._tasks.put((job, fn, args))
        try:
            while pending:
                try:
                    job, ok, value = self._results.get(timeout=0.5)
                except queue.Empty:
                    dead = [p for p in self._procs if not p.is_alive()]
                    if dead:
                        running = "; ".join(describe(a) for a in pending.values())
                        raise EvaluationError(f"evaluation worker {dead[0].name} died (exit code {dead[0].exitcode}) "
                                              f"with jobs unfinished: {running}") from None
                    continue
                pending.pop(job)
                if not ok:
                    raise value
                yield value
        except BaseException:
            # the other workers may still run this call's jobs (or the caller stopped early): stop them all,
            # so no stale result can reach a later call; the next call starts fresh workers
            self.close(wait=False)
            raise

    def close(self, wait: bool = True) -> None:
        """Stop the workers (wait: let them finish and close their state first, up to a few seconds)."""
        _close_state(self._inline_state)
        self._inline_state["worker"] = False
        procs, self._procs = self._procs, []
        if wait:
            for _ in procs:
                self._tasks.put(None)
            for p in procs:
                p.join(timeout=10)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for q in (self._tasks, self._results):
            if q is not None:
                q.cancel_join_thread()  # never block on a queue nobody reads any more
                q.close()
        self._tasks = self._results = None
