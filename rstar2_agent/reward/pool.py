"""Score answers in worker processes with a hard per-item timeout: a thin wrapper over `pebble.ProcessPool`.

Processes, as scoring runs sympy and math-verify on untrusted model output: some inputs never finish, math-verify's
limits need ``signal.alarm`` (a main thread: pebble runs items there), and a runaway item must never block the
trainer. pebble kills and replaces the worker of an item past ``timeout_s``. The wrapper adds: every item ends as a
score (0.0 on a timeout, a dead worker or an error); workers that cannot load the score function break the pool
(pebble restarts a worker whose initializer raises, forever); close() fails every unfinished item, queued or running.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import pickle
import pkgutil
import signal
import threading
from collections.abc import Callable, Iterable

import pebble

from rstar2_agent.cores import usable_cores

__all__ = ["RewardPool", "RewardPoolClosedError", "RewardPoolBrokenError", "DEFAULT_SCORE_FN"]
logger = logging.getLogger(__name__)
DEFAULT_SCORE_FN = "rstar2_agent.reward.scoring:compute_score"  # imported inside each worker


class RewardPoolClosedError(RuntimeError):
    """The pool was closed before this item was scored."""


class RewardPoolBrokenError(RuntimeError):
    """The workers cannot load the score function, so no item can be scored."""


_worker: dict = {}  # in a worker: "fn" (the score function) or "fatal" (why it could not be loaded)


def _too_slow(*_) -> None:
    raise TimeoutError("the worker did not start within start_timeout_s")


def _start_worker(spec: str | Callable, start_timeout_s: float) -> None:
    """pebble's initializer. It never raises (pebble would restart the worker forever): the first item reports it."""
    previous = signal.signal(signal.SIGALRM, _too_slow)
    signal.setitimer(signal.ITIMER_REAL, start_timeout_s)
    try:
        _worker["fn"] = pkgutil.resolve_name(spec) if isinstance(spec, str) else spec
        if spec == DEFAULT_SCORE_FN:
            _worker["fn"]("\\boxed{1}", "1")  # lazy imports and caches, outside any item's time limit
    except BaseException as exc:  # noqa: BLE001 - reported by the first item
        _worker["fatal"] = f"reward worker could not start: {type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _score(solution: str, truth: str) -> tuple[str, float | str]:
    if "fatal" in _worker:
        return "fatal", _worker["fatal"]
    try:
        return "scored", float(_worker["fn"](solution, truth))
    except Exception as exc:  # noqa: BLE001 - scores 0.0; the worker lives on
        return "errors", f"{type(exc).__name__}: {exc}"[:500]


def _settle(future: concurrent.futures.Future, value: float = 0.0, error: Exception | None = None) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # already failed, or cancelled by the caller
        future.set_exception(error) if error is not None else future.set_result(value)


class RewardPool:
    """`num_workers` processes (default: the usable cores); an item may run `timeout_s` once a worker takes it.
    `score_fn`: ``"module:function"`` or a picklable module-level ``f(solution, truth) -> float``; `start_method`:
    ``forkserver`` (default: it preloads the scoring module) or ``spawn``; both import the caller's ``__main__``
    (scripts need a main guard). `start_timeout_s`: how long a worker may take to load `score_fn`. Thread-safe."""

    def __init__(self, num_workers: int | None = None, timeout_s: float = 5.0,
                 score_fn: str | Callable = DEFAULT_SCORE_FN, start_method: str | None = None,
                 start_timeout_s: float = 120.0) -> None:
        num_workers = usable_cores() if num_workers is None else num_workers
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        if not all(isinstance(t, (int, float)) and t > 0 for t in (timeout_s, start_timeout_s)):
            raise ValueError(f"timeout_s and start_timeout_s must be positive, got {timeout_s!r}, {start_timeout_s!r}")
        if not (callable(score_fn) or isinstance(score_fn, str) and ":" in score_fn):
            raise ValueError(f"score_fn must be a callable or 'package.module:function', got {score_fn!r}")
        try:
            pickle.dumps(score_fn)
        except Exception as exc:
            raise TypeError(f"score_fn {score_fn!r} cannot be sent to workers: {exc}") from exc
        method = start_method or ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        if method == "fork":
            raise ValueError("start_method='fork' is unsafe with the pool's threads; use 'forkserver' or 'spawn'")
        context = multiprocessing.get_context(method)  # ValueError for a method this platform lacks
        if method == "forkserver" and isinstance(score_fn, str):
            context.set_forkserver_preload([score_fn.partition(":")[0]])
        self.num_workers, self.timeout_s, self.closed = num_workers, float(timeout_s), False
        self.broken: str | None = None  # why the workers cannot start
        self.stats = dict.fromkeys(("scored", "timeouts", "crashes", "errors"), 0)
        self._lock, self._pending = threading.Lock(), set()
        self._pool = pebble.ProcessPool(num_workers, initializer=_start_worker, context=context,
                                        initargs=(score_fn, float(start_timeout_s)))
        self._pool.active  # start the workers now, not at the first item

    def submit(self, solution: str, ground_truth: str) -> concurrent.futures.Future:
        """A future of the item's score (or RewardPoolClosedError / RewardPoolBrokenError if the pool closes first or
        cannot start). Cancelling it stops the item, and its worker if running."""
        if not isinstance(solution, str) or not isinstance(ground_truth, str):
            raise TypeError(f"submit takes two str, got {type(solution).__name__}, {type(ground_truth).__name__}")
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self.broken or self.closed:
                raise RewardPoolBrokenError(self.broken) if self.broken else RewardPoolClosedError("pool is closed")
            self._pending.add(future)
            task = self._pool.schedule(_score, args=(solution, ground_truth), timeout=self.timeout_s)
        task.add_done_callback(lambda done: self._done(done, future))
        future.add_done_callback(lambda f: f.cancelled() and task.cancel())
        return future

    def score_many(self, pairs: Iterable[tuple[str, str]]) -> list[float]:
        """The scores of ``(solution, ground_truth)`` pairs, scored concurrently, in input order."""
        for index, pair in enumerate(pairs := list(pairs)):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise TypeError(f"pairs[{index}] must be a (solution, ground_truth) pair of two str, got {pair!r:.80}")
        return [future.result() for future in [self.submit(*pair) for pair in pairs]]

    def close(self) -> None:
        """Stop and reap the workers; unfinished items raise RewardPoolClosedError. Idempotent."""
        if not self.closed:  # `closed` first: a submit() that missed it holds the lock _fail_all waits for
            self.closed = True
            self._fail_all(RewardPoolClosedError("RewardPool was closed before this item was scored"))
            self._pool.stop()
            self._pool.join()

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _done(self, task: concurrent.futures.Future, future: concurrent.futures.Future) -> None:
        """pebble's outcome of one item -> its score (runs in a pebble thread)."""
        with self._lock:
            self._pending.discard(future)
            closed = self.closed
        if task.cancelled() or closed:  # by the caller, through `future` (settling it is then a no-op); or closed
            return _settle(future, error=RewardPoolClosedError("RewardPool was closed before this item was scored"))
        error = task.exception()
        kind, detail = ("", "") if error else task.result()
        if isinstance(error, TimeoutError):
            kind, detail = "timeouts", f"past {self.timeout_s:g}s, its worker killed"
        elif isinstance(error, pebble.ProcessExpired):
            kind, detail = "crashes", f"worker {error.pid} died (exit code {error.exitcode})"
        elif error or kind == "fatal":  # the score function cannot load (or pebble failed): restarts would loop
            self.broken = self.broken or detail or f"reward pool failed: {error!r}"  # broken stays apart from closed
            logger.error("%s", self.broken)
            return self._fail_all(RewardPoolBrokenError(self.broken), future)
        if kind != "scored":
            logger.warning("reward item scored 0.0 (%s): %s", kind, detail)
        with self._lock:
            self.stats[kind] += 1
        _settle(future, detail if kind == "scored" else 0.0)

    def _fail_all(self, error: Exception, *also: concurrent.futures.Future) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
        for future in (*pending, *also):
            _settle(future, error=error)
