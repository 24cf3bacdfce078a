"""Score answers in worker processes with a hard per-item timeout.

Why processes, not threads: scoring runs sympy and math-verify on untrusted model output. Some inputs
take seconds or never finish (``(10^{7})!`` keeps math-verify busy until its own limit; a big integer
power can keep sympy inside one C call that no signal interrupts), math-verify's own limits need
``signal.alarm`` and therefore a main thread, and a runaway item must never block or crash the trainer. Each worker process scores one item at a
time in its main thread; an item that runs past ``timeout_s`` scores 0.0 and its worker is killed
(SIGKILL) and replaced. A worker that dies for any other reason is replaced too, and its item scores
0.0. Scoring never runs in the caller's process.

Example::

    >>> from rstar2_agent.reward.pool import RewardPool
    >>> with RewardPool(num_workers=2, timeout_s=5.0) as pool:   # doctest: +SKIP
    ...     pool.score_many([(r"\\boxed{2}", "2"), (r"\\boxed{9^{9^{9^{9}}}}", "1")])
    [1.0, 0.0]

Workers start with the ``forkserver`` method by default: the fork server imports the scoring code
once, so replacing a killed worker costs a fork, not a fresh interpreter. Like every
``multiprocessing`` start method except ``fork``, each worker imports the caller's ``__main__``
module, so scripts must keep their entry point under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import importlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from rstar2_agent.cores import usable_cores

__all__ = ["RewardPool", "RewardPoolClosedError", "RewardPoolBrokenError", "DEFAULT_SCORE_FN"]

logger = logging.getLogger(__name__)

#: The scoring function workers run, as ``"module:attribute"`` (imported inside each worker).
DEFAULT_SCORE_FN = "rstar2_agent.reward.scoring:compute_score"

ScoreFn = Callable[[str, str], float]


class RewardPoolClosedError(RuntimeError):
    """The pool was closed before (or while) this item was scored."""


class RewardPoolBrokenError(RuntimeError):
    """Workers cannot start (for example the scoring function cannot be imported in a worker)."""


# --------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------


def resolve_score_fn(spec: str | ScoreFn) -> ScoreFn:
    """Turn ``"package.module:function"`` into the function; callables are returned as they are.

    >>> resolve_score_fn("os.path:join")("a", "b")
    'a/b'
    """
    if callable(spec):
        return spec
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"score_fn must be a callable or 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module_name), attribute)


def _limit_memory(memory_limit_mb: int | None) -> None:
    """Cap this process's address space so a runaway item fails with MemoryError instead of swapping."""
    if memory_limit_mb:
        import resource

        limit = int(memory_limit_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _worker_main(conn: Connection, score_fn_spec: str | ScoreFn, memory_limit_mb: int | None) -> None:
    """Worker loop: say ``ready``, then answer ``(job_id, solution, truth)`` with ``(job_id, status, value)``.

    Runs in the worker's main thread, so math-verify's ``signal.alarm`` limits work here. Exits on
    ``None`` or when the parent's end of the pipe closes.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        _limit_memory(memory_limit_mb)
        score_fn = resolve_score_fn(score_fn_spec)
        if score_fn_spec == DEFAULT_SCORE_FN:
            score_fn("\\boxed{1}", "1")  # warm caches and lazy imports outside any item's time limit
    except BaseException as exc:  # noqa: BLE001 - report any startup failure to the parent
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_id, solution, truth = message
        try:
            reply = (job_id, "ok", float(score_fn(solution, truth)))
        except Exception as exc:  # noqa: BLE001 - an error scores 0.0; the worker lives on
            reply = (job_id, "error", f"{type(exc).__name__}: {exc}"[:500])
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


# --------------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One item to score, with the future its caller waits on."""

    job_id: int
    solution: str
    truth: str
    timeout_s: float
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass
class _Worker:
    """A worker process, the parent's end of its pipe, and what it is doing."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    started_at: float
    ready: bool = False
    job: _Job | None = None
    deadline: float | None = None
    stopped: bool = False


def _check_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Validate ``(solution, ground_truth)`` string pairs and return them as a list."""
    checked = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"pairs[{index}] must be a (solution, ground_truth) pair, got {type(pair).__name__}")
        solution, truth = pair
        if not isinstance(solution, str) or not isinstance(truth, str):
            raise TypeError(
                f"pairs[{index}] must hold two str, got ({type(solution).__name__}, {type(truth).__name__})"
            )
        checked.append((solution, truth))
    return checked


_LIVE_POOLS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    """Stop every open pool before multiprocessing's own exit handler reaps the workers."""
    for pool in list(_LIVE_POOLS):
        pool.close()


class RewardPool:
    """A pool of scoring processes with a hard per-item timeout.

    Args:
        num_workers: worker processes (default: the CPUs this process may use).
        timeout_s: wall-clock limit for one item, counted from when a worker receives it.
        score_fn: ``"module:function"`` or a picklable module-level callable ``f(solution, truth) -> float``.
        start_method: a ``multiprocessing`` start method; ``forkserver`` (default) or ``spawn``.
            ``fork`` is refused: the pool's dispatcher thread makes forking the caller unsafe.
        memory_limit_mb: optional address-space cap per worker (``RLIMIT_AS``).
        start_timeout_s: how long a new worker may take to import the scoring code.

    Thread- and asyncio-safe: any number of threads or coroutines may call :meth:`score_many`,
    :meth:`ascore_many`, :meth:`submit` at once. Call :meth:`close` (or use ``with``) when done.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = 5.0,
        score_fn: str | ScoreFn = DEFAULT_SCORE_FN,
        start_method: str | None = None,
        memory_limit_mb: int | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        num_workers = usable_cores() if num_workers is None else num_workers
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be positive, got {start_timeout_s!r}")
        self._score_fn_spec = self._check_score_fn(score_fn)
        self._ctx = self._make_context(start_method)
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self._memory_limit_mb = memory_limit_mb
        self._start_timeout_s = float(start_timeout_s)

        self._lock = threading.Lock()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._ids = itertools.count()
        self._closing = False
        self._broken: str | None = None
        self._startup_failures = 0
        self._stats = collections.Counter()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

        self._workers: list[_Worker] = [self._start_worker() for _ in range(num_workers)]
        self._thread = threading.Thread(target=self._dispatch_loop, name="reward-pool-dispatcher", daemon=True)
        self._thread.start()
        _LIVE_POOLS.add(self)

    # ---- construction helpers ------------------------------------------------------------------

    @staticmethod
    def _check_score_fn(score_fn: str | ScoreFn) -> str | ScoreFn:
        """Reject score functions a worker could not receive, with a clear message."""
        if isinstance(score_fn, str):
            if ":" not in score_fn:
                raise ValueError(f"score_fn must look like 'package.module:function', got {score_fn!r}")
            return score_fn
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable or a 'module:function' string, got {score_fn!r}")
        try:
            pickle.dumps(score_fn)
        except Exception as exc:
            raise TypeError(
                f"score_fn {score_fn!r} cannot be sent to worker processes (use a module-level function "
                f"or a 'module:function' string): {exc}"
            ) from exc
        return score_fn

    def _make_context(self, start_method: str | None) -> multiprocessing.context.BaseContext:
        """Pick the start method; preload the scoring module into the fork server."""
        methods = multiprocessing.get_all_start_methods()
        method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if method == "fork":
            raise ValueError("start_method='fork' is unsafe with the pool's dispatcher thread; use 'forkserver' or 'spawn'")
        if method not in methods:
            raise ValueError(f"start method {method!r} is not available here (have {methods})")
        ctx = multiprocessing.get_context(method)
        if method == "forkserver" and isinstance(self._score_fn_spec, str):
            ctx.set_forkserver_preload([self._score_fn_spec.partition(":")[0]])
        return ctx

    def _start_worker(self) -> _Worker:
        """Start one worker process (it reports ``ready`` once the scoring code is imported)."""
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self._score_fn_spec, self._memory_limit_mb),
            name="reward-pool-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return _Worker(process=process, conn=parent_conn, started_at=time.monotonic())

    # ---- public API ----------------------------------------------------------------------------

    def submit(self, solution: str, ground_truth: str, timeout_s: float | None = None) -> concurrent.futures.Future:
        """Queue one item; the returned future resolves to its score (0.0 on timeout or crash).

        The future raises :class:`RewardPoolClosedError` if the pool closes first, and
        :class:`RewardPoolBrokenError` if workers cannot start.
        """
        (solution, ground_truth), = _check_pairs([(solution, ground_truth)])
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        if limit <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        with self._lock:
            if self._broken is not None:
                raise RewardPoolBrokenError(self._broken)
            if self._closing:
                raise RewardPoolClosedError("RewardPool is closed")
            job = _Job(next(self._ids), solution, ground_truth, limit)
            self._jobs.append(job)
            self._wake()
        return job.future

    def score_many(self, pairs: Sequence[tuple[str, str]], timeout_s: float | None = None) -> list[float]:
        """Score ``(solution, ground_truth)`` pairs concurrently; returns scores in input order.

        >>> pool.score_many([(r"\\boxed{1}", "1")])   # doctest: +SKIP
        [1.0]
        """
        futures = [self.submit(s, t, timeout_s) for s, t in _check_pairs(pairs)]
        return [future.result() for future in futures]

    async def ascore_many(self, pairs: Sequence[tuple[str, str]], timeout_s: float | None = None) -> list[float]:
        """Async :meth:`score_many`: awaits without blocking the event loop."""
        futures = [self.submit(s, t, timeout_s) for s, t in _check_pairs(pairs)]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    def score(self, solution: str, ground_truth: str, timeout_s: float | None = None) -> float:
        """Score one item (blocking)."""
        return self.submit(solution, ground_truth, timeout_s).result()

    async def ascore(self, solution: str, ground_truth: str, timeout_s: float | None = None) -> float:
        """Score one item (async)."""
        return await asyncio.wrap_future(self.submit(solution, ground_truth, timeout_s))

    def worker_pids(self) -> list[int | None]:
        """PIDs of the current worker processes (they change when workers are replaced)."""
        with self._lock:
            return [w.process.pid for w in self._workers]

    def busy_worker_pids(self) -> list[int | None]:
        """PIDs of the workers that are scoring an item right now (for monitoring and tests)."""
        with self._lock:
            return [w.process.pid for w in self._workers if w.job is not None]

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``scored``, ``timeouts``, ``crashes``, ``errors``, ``restarts``."""
        with self._lock:
            return {key: self._stats[key] for key in ("scored", "timeouts", "crashes", "errors", "restarts")}

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (a broken pool is not closed until then; see :attr:`broken`)."""
        return self._closing

    @property
    def broken(self) -> str | None:
        """Why the workers cannot start (the pool then refuses every item), or None while they can."""
        return self._broken

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers; unfinished items raise :class:`RewardPoolClosedError`. Idempotent."""
        with self._lock:
            self._closing = True
            self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        _LIVE_POOLS.discard(self)

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closing else "broken" if self._broken else "open"
        return f"RewardPool(num_workers={self.num_workers}, timeout_s={self.timeout_s}, {state})"

    # ---- dispatcher (runs in its own thread) ---------------------------------------------------

    def _wake(self) -> None:
        """Interrupt the dispatcher's wait (new job or close). Call with ``self._lock`` held."""
        if self._wake_w is None:
            return  # the dispatcher has exited and closed the pipe
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full, so the dispatcher is going to wake anyway

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _dispatch_loop(self) -> None:
        """Hand jobs to ready workers, collect results, enforce deadlines, replace dead workers."""
        try:
            while not self._closing and self._broken is None:
                self._assign_jobs()
                ready = wait(self._waitables(), self._seconds_to_next_deadline())
                if self._wake_r in ready:
                    self._drain_wake_pipe()
                for worker in list(self._workers):
                    if worker.stopped:
                        continue  # only while closing: its slot is not refilled
                    if worker.conn in ready:
                        self._read_from(worker)
                    elif worker.process.sentinel in ready:
                        self._on_worker_died(worker)
                self._enforce_deadlines()
        except Exception:  # pragma: no cover - a bug here must not leave callers waiting forever
            logger.exception("reward pool dispatcher failed")
            self._broken = "reward pool dispatcher failed; see the log"
        finally:
            self._shutdown()

    def _waitables(self) -> list:
        items: list = [self._wake_r]
        for worker in self._workers:
            if not worker.stopped:
                items += [worker.conn, worker.process.sentinel]
        return items

    def _seconds_to_next_deadline(self) -> float | None:
        now = time.monotonic()
        deadlines = [w.deadline for w in self._workers if w.deadline is not None]
        deadlines += [w.started_at + self._start_timeout_s for w in self._workers if not w.ready]
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _assign_jobs(self) -> None:
        """Give each ready, idle worker the next job that its caller still wants."""
        for worker in self._workers:
            if not worker.ready or worker.job is not None or worker.stopped:
                continue
            job = self._next_job()
            if job is None:
                return
            try:
                worker.conn.send((job.job_id, job.solution, job.truth))
            except (BrokenPipeError, OSError):
                with self._lock:
                    self._jobs.appendleft(job)  # the worker is gone; its sentinel will fire
                continue
            worker.job, worker.deadline = job, time.monotonic() + job.timeout_s

    def _next_job(self) -> _Job | None:
        with self._lock:
            while self._jobs:
                job = self._jobs.popleft()
                if job.future.set_running_or_notify_cancel():
                    return job
        return None

    def _read_from(self, worker: _Worker) -> None:
        """Handle one message from a worker: ready, fatal, or a result."""
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._on_worker_died(worker)
            return
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            self._startup_failures = 0
        elif kind == "fatal":
            self._mark_broken(f"reward worker could not start: {message[1]}")
        elif worker.job is not None and message[0] == worker.job.job_id:
            _, status, value = message
            if status == "ok":
                self._finish(worker, value, "scored")
            else:
                logger.warning("reward scoring raised in a worker (scored 0.0): %s", value)
                self._finish(worker, 0.0, "errors")

    def _finish(self, worker: _Worker, score: float, counter: str, replace: bool = False) -> None:
        """Detach the worker's job, replace the worker if asked, then give the caller its score.

        Replacing first means a caller who sees a timeout's 0.0 also sees the new worker.
        """
        job, worker.job, worker.deadline = worker.job, None, None
        if replace:
            self._replace(worker)
        with self._lock:
            self._stats[counter] += 1
        if job is not None and not job.future.done():
            job.future.set_result(score)

    def _enforce_deadlines(self) -> None:
        """Kill workers whose item (or startup) ran past its deadline."""
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.stopped:
                continue
            if worker.deadline is not None and now >= worker.deadline:
                logger.warning("reward item exceeded %.1fs; killing worker %s", worker.job.timeout_s, worker.process.pid)
                self._finish(worker, 0.0, "timeouts", replace=True)
            elif not worker.ready and now >= worker.started_at + self._start_timeout_s:
                self._on_startup_failure(worker, f"worker did not start within {self._start_timeout_s}s")

    def _on_worker_died(self, worker: _Worker) -> None:
        """A worker exited on its own (crash, OOM kill, external kill): score its item 0.0, replace it."""
        if not worker.ready:
            code = worker.process.exitcode
            self._on_startup_failure(worker, f"worker exited during startup (exit code {code})")
            return
        if worker.job is not None:
            logger.warning("reward worker %s died while scoring; item scored 0.0", worker.process.pid)
            self._finish(worker, 0.0, "crashes", replace=True)
        else:
            self._replace(worker)

    def _on_startup_failure(self, worker: _Worker, reason: str) -> None:
        self._startup_failures += 1
        if self._startup_failures >= 3:
            self._mark_broken(f"reward workers keep failing to start: {reason}")
        else:
            self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` if still alive and put a fresh process in its slot."""
        self._stop_process(worker)
        if self._closing or self._broken is not None:
            return
        index = self._workers.index(worker)
        self._workers[index] = self._start_worker()
        with self._lock:
            self._stats["restarts"] += 1

    @staticmethod
    def _stop_process(worker: _Worker) -> None:
        """SIGKILL (if alive), reap, and release the pipe and sentinel. Idempotent."""
        if worker.stopped:
            return
        worker.stopped = True
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5.0)
        worker.conn.close()
        try:
            worker.process.close()  # release the sentinel fd
        except ValueError:
            pass  # still running after SIGKILL + 5 s (should not happen); leave it to the OS

    def _mark_broken(self, reason: str) -> None:
        """Fail everything and stop dispatching: workers cannot run the scoring code, so retrying would loop
        forever. The pool stays ``broken`` (not ``closed``) so its owner can tell the two apart."""
        logger.error("%s", reason)
        with self._lock:
            self._broken = reason
        self._fail_all(RewardPoolBrokenError(reason))

    def _fail_all(self, error: Exception) -> None:
        """Resolve every queued and in-flight future with ``error``."""
        with self._lock:
            pending, self._jobs = list(self._jobs), collections.deque()
        pending += [w.job for w in self._workers if w.job is not None]
        for worker in self._workers:
            worker.job, worker.deadline = None, None
        for job in pending:
            if not job.future.done():
                job.future.set_exception(error)

    def _shutdown(self) -> None:
        """Stop all workers and fail what is left (runs when the dispatcher exits)."""
        self._fail_all(RewardPoolClosedError("RewardPool was closed before this item was scored"))
        live = [worker for worker in self._workers if not worker.stopped]
        for worker in live:
            try:
                worker.conn.send(None)  # ask politely first; idle workers exit at once
            except (BrokenPipeError, OSError):
                pass
        for worker in live:
            worker.process.join(0.5)
            self._stop_process(worker)
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = None
