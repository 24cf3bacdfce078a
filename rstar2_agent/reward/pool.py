"""Score answers in worker processes with a hard per-item timeout: a thin wrapper over `pebble.ProcessPool`.

Processes, not threads: scoring runs sympy and math-verify on untrusted model output; some inputs never finish
(a big integer power can keep sympy in one C call that no signal interrupts), math-verify's own limits need
``signal.alarm`` and so a main thread, and a runaway item must never block or crash the trainer. pebble runs each
item in a worker's main thread; an item past ``timeout_s`` scores 0.0 and pebble kills and replaces its worker. A
worker that dies otherwise is replaced too, and its item scores 0.0. Scoring never runs in the caller's process.

    >>> with RewardPool(num_workers=2, timeout_s=5.0) as pool:   # doctest: +SKIP
    ...     pool.score_many([(r"\\boxed{2}", "2"), (r"\\boxed{9^{9^{9^{9}}}}", "1")])
    [1.0, 0.0]

Workers start with ``forkserver`` by default (it preloads the scoring module, so a replacement costs a fork); like
every start method but ``fork``, they import the caller's ``__main__``, so scripts need ``if __name__ == ...``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import importlib
import logging
import math
import multiprocessing
import pickle
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import pebble

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


def resolve_score_fn(spec: str | ScoreFn) -> ScoreFn:
    """``"package.module:function"`` -> the function; a callable as it is.

    >>> resolve_score_fn("os.path:join")("a", "b")
    'a/b'
    """
    if callable(spec):
        return spec
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"score_fn must be a callable or 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module_name), attribute)


# ---- worker side: the initializer loads the scoring function once per process, `_score` runs one item ----

_worker: dict = {}


def _too_slow(*_) -> None:
    raise TimeoutError("the worker did not start within start_timeout_s")


def _start_worker(spec: str | ScoreFn, memory_limit_mb: int | None, start_timeout_s: float) -> None:
    """pebble's initializer. It never raises (pebble would restart a failing worker forever): a failure is kept
    and reported by the first item, which breaks the pool."""
    previous = signal.signal(signal.SIGALRM, _too_slow)
    signal.alarm(math.ceil(start_timeout_s))
    try:
        if memory_limit_mb:  # a runaway item fails with MemoryError instead of swapping
            limit = int(memory_limit_mb) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _worker["fn"] = resolve_score_fn(spec)
        if spec == DEFAULT_SCORE_FN:
            _worker["fn"]("\\boxed{1}", "1")  # warm caches and lazy imports outside any item's time limit
    except BaseException as exc:  # noqa: BLE001 - reported by the first item
        _worker["fatal"] = f"reward worker could not start: {type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _score(solution: str, truth: str) -> tuple[str, float | str]:
    if "fatal" in _worker:
        return "fatal", _worker["fatal"]
    try:
        return "ok", float(_worker["fn"](solution, truth))
    except Exception as exc:  # noqa: BLE001 - an error scores 0.0; the worker lives on
        return "error", f"{type(exc).__name__}: {exc}"[:500]


def _check_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(solution, ground_truth)`` str pairs as a list, or a TypeError naming the first bad one."""
    for index, pair in enumerate(pairs := list(pairs)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"pairs[{index}] must be a (solution, ground_truth) pair, got {type(pair).__name__}")
        if not all(isinstance(x, str) for x in pair):
            raise TypeError(f"pairs[{index}] must hold two str, got ({', '.join(type(x).__name__ for x in pair)})")
    return [tuple(pair) for pair in pairs]


def _check_score_fn(score_fn: str | ScoreFn) -> str | ScoreFn:
    """Reject score functions a worker could not receive, with a clear message."""
    if isinstance(score_fn, str) and ":" not in score_fn:
        raise ValueError(f"score_fn must look like 'package.module:function', got {score_fn!r}")
    if not isinstance(score_fn, str):
        try:
            pickle.dumps(score_fn)
        except Exception as exc:
            raise TypeError(f"score_fn {score_fn!r} cannot be sent to worker processes (use a module-level "
                            f"function or a 'module:function' string): {exc}") from exc
    return score_fn


def _settle(future: concurrent.futures.Future, value: float | None = None, error: Exception | None = None) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # already failed by close() or a broken pool
        future.set_exception(error) if error is not None else future.set_result(value)


class RewardPool:
    """`num_workers` scoring processes (default: the usable cores) with a hard per-item `timeout_s`, counted
    from when a worker takes the item. `score_fn`: ``"module:function"`` or a picklable module-level
    ``f(solution, truth) -> float``; `start_method`: ``forkserver`` (default) or ``spawn`` (``fork`` is refused:
    the pool runs threads); `memory_limit_mb`: an ``RLIMIT_AS`` per worker; `start_timeout_s`: how long a worker
    may take to load the scoring code. Thread- and asyncio-safe; :meth:`close` it (or use ``with``)."""

    def __init__(self, num_workers: int | None = None, timeout_s: float = 5.0,
                 score_fn: str | ScoreFn = DEFAULT_SCORE_FN, start_method: str | None = None,
                 memory_limit_mb: int | None = None, start_timeout_s: float = 120.0) -> None:
        num_workers = usable_cores() if num_workers is None else num_workers
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        for name, value in (("timeout_s", timeout_s), ("start_timeout_s", start_timeout_s)):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        spec = _check_score_fn(score_fn)
        methods = multiprocessing.get_all_start_methods()
        method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if method == "fork":
            raise ValueError("start_method='fork' is unsafe with the pool's threads; use 'forkserver' or 'spawn'")
        if method not in methods:
            raise ValueError(f"start method {method!r} is not available here (have {methods})")
        context = multiprocessing.get_context(method)
        if method == "forkserver" and isinstance(spec, str):
            context.set_forkserver_preload([spec.partition(":")[0]])
        self.num_workers, self.timeout_s = num_workers, float(timeout_s)
        self._pool = pebble.ProcessPool(max_workers=num_workers, initializer=_start_worker,
                                        initargs=(spec, memory_limit_mb, float(start_timeout_s)), context=context)
        self._pool.active  # start the workers now (pebble starts them on first use)
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future] = set()
        self._closing, self._broken = False, None
        self._stats: collections.Counter = collections.Counter()

    def submit(self, solution: str, ground_truth: str, timeout_s: float | None = None) -> concurrent.futures.Future:
        """A future of the item's score (0.0 on timeout, crash or error); it raises RewardPoolClosedError if the
        pool closes first, RewardPoolBrokenError if workers cannot start."""
        (solution, ground_truth), = _check_pairs([(solution, ground_truth)])
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        if limit <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._broken is not None:
                raise RewardPoolBrokenError(self._broken)
            if self._closing:
                raise RewardPoolClosedError("RewardPool is closed")
            self._pending.add(future)
            task = self._pool.schedule(_score, args=(solution, ground_truth), timeout=limit)
        task.add_done_callback(lambda done: self._done(done, future, limit))
        future.add_done_callback(lambda f: f.cancelled() and task.cancel())  # pebble kills a running item's worker
        return future

    def score_many(self, pairs: Sequence[tuple[str, str]], timeout_s: float | None = None) -> list[float]:
        """The scores of ``(solution, ground_truth)`` pairs, scored concurrently, in input order."""
        return [f.result() for f in [self.submit(s, t, timeout_s) for s, t in _check_pairs(pairs)]]

    async def ascore_many(self, pairs: Sequence[tuple[str, str]], timeout_s: float | None = None) -> list[float]:
        futures = [asyncio.wrap_future(self.submit(s, t, timeout_s)) for s, t in _check_pairs(pairs)]
        return list(await asyncio.gather(*futures))

    def score(self, solution: str, ground_truth: str, timeout_s: float | None = None) -> float:
        return self.submit(solution, ground_truth, timeout_s).result()

    async def ascore(self, solution: str, ground_truth: str, timeout_s: float | None = None) -> float:
        return await asyncio.wrap_future(self.submit(solution, ground_truth, timeout_s))

    def worker_pids(self, wait_s: float = 5.0) -> list[int]:
        """PIDs of the worker processes (they change when workers are replaced). pebble starts a replacement
        just after it settles the killed worker's item, so this waits up to `wait_s` for a full pool."""
        deadline = time.monotonic() + wait_s
        while True:  # pebble has no public view of its workers or tasks (also in busy_worker_pids)
            pids = list(self._pool._pool_manager.worker_manager.workers)
            if len(pids) >= self.num_workers or self._closing or time.monotonic() > deadline:
                return pids
            time.sleep(0.02)

    def busy_worker_pids(self) -> list[int]:
        """PIDs of the workers scoring an item right now (for monitoring and tests)."""
        tasks = tuple(self._pool._pool_manager.task_manager.tasks.values())
        return [t.worker_id for t in tasks if t.started and t.worker_id]

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``scored``, ``timeouts``, ``crashes``, ``errors``, ``restarts``."""
        with self._lock:
            return {key: self._stats[key] for key in ("scored", "timeouts", "crashes", "errors", "restarts")}

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (a broken pool is not closed until then)."""
        return self._closing

    @property
    def broken(self) -> str | None:
        """Why the workers cannot start (the pool then refuses every item), or None."""
        return self._broken

    def close(self, timeout: float = 10.0) -> None:
        """Stop (SIGTERM, then SIGKILL) and reap the workers; unfinished items raise
        :class:`RewardPoolClosedError`. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._fail_all(RewardPoolClosedError("RewardPool was closed before this item was scored"))
        self._pool.stop()
        self._pool.join(timeout)

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closing else "broken" if self._broken else "open"
        return f"RewardPool(num_workers={self.num_workers}, timeout_s={self.timeout_s}, {state})"

    def _done(self, task: concurrent.futures.Future, future: concurrent.futures.Future, limit: float) -> None:
        """Turn pebble's outcome of one item into its score (runs in one of pebble's threads)."""
        if task.cancelled():  # by the caller, through `future`
            with self._lock:
                return self._pending.discard(future)
        error = task.exception()
        status, value = (None, None) if error is not None else task.result()
        if status == "fatal":
            return self._mark_broken(value)
        if isinstance(error, concurrent.futures.TimeoutError):
            logger.warning("reward item exceeded %.1fs; its worker was killed", limit)
            counters = ("timeouts", "restarts")
        elif isinstance(error, pebble.ProcessExpired):
            logger.warning("reward worker %s died while scoring (exit code %s); item scored 0.0", error.pid,
                           error.exitcode)
            counters = ("crashes", "restarts")
        elif error is not None:  # the pool itself failed (pebble's BrokenProcessPool, a closed pool)
            if self._closing:
                return _settle(future, error=RewardPoolClosedError("RewardPool was closed"))
            return self._mark_broken(f"reward pool failed: {type(error).__name__}: {error}")
        elif status == "error":
            logger.warning("reward scoring raised in a worker (scored 0.0): %s", value)
            counters = ("errors",)
        else:
            counters = ("scored",)
        with self._lock:
            self._stats.update(counters)
            self._pending.discard(future)
        _settle(future, value if status == "ok" else 0.0)

    def _mark_broken(self, reason: str) -> None:
        """Fail everything: workers cannot run the scoring code, so retrying would loop forever. The pool stays
        ``broken`` (not ``closed``) so its owner can tell the two apart."""
        with self._lock:
            if self._broken is None:
                self._broken = reason
                logger.error("%s", reason)
        self._fail_all(RewardPoolBrokenError(self._broken))

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
        for future in pending:
            _settle(future, error=error)
