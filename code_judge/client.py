"""Async client for the code-judge HTTP service (API-compatible with the public 0xWJ/code-judge).

Why this exists
---------------
An RL rollout fires thousands of tiny, independent "run this snippet" calls from many coroutines at
once. Sending each as its own HTTP request wastes most of the time in request overhead and in the
server's per-request queueing. `CodeJudgeClient` therefore **micro-batches**: single calls made in the
same event-loop tick, or within `batch_wait_s` of each other (default 0: no added latency), or while all
request slots are busy, travel together (up to `max_batch_size`) as one `POST /run/long-batch` request, and
each caller gets back exactly its own `SubmissionResult` (results are matched by position, which the service
guarantees).

Pushback, all with capped exponential backoff and up to ``max_retries`` retries:

* an item answered ``queue_timeout`` is resubmitted on its own schedule (`_deliver`); once its retries are
  spent, the last ``queue_timeout`` result is handed to the caller as-is, so the caller can see why;
* a transport failure, 5xx, 408 or 429 retries the whole request (`_retrying`, tenacity); then every caller
  of that request gets a `CodeJudgeError` naming the URL, the number of attempts and the last error. Any
  other 4xx is a bug in what we sent: `CodeJudgeError` at once, with the server's detail, except a 413 for
  several items, which our batching caused: the batch is split in halves and re-sent (`_split`).

At most ``max_concurrency`` requests are in flight at any time (a semaphore). While all slots are
busy, new calls keep accumulating, so the next request leaves fuller. The batcher is a plain asyncio
task, started lazily on first use and cancelled by `aclose()`; no threads are involved.

Usage::

    import asyncio
    from code_judge.client import CodeJudgeClient

    async def main():
        async with CodeJudgeClient("http://127.0.0.1:8088") as client:
            # 100 concurrent calls go out as a handful of /run/long-batch requests
            results = await asyncio.gather(*(client.run(f"print({i}*2)") for i in range(100)))
            print(results[21].stdout)            # "42\\n"
            res = await client.run("print(input())", "hi", expected_output="hi\\n")
            print(res.success, res.reason)       # True Reason.NONE
            print(client.stats)                  # ClientStats(requests=..., items=101, ...)

    asyncio.run(main())

Only ``httpx``, ``pydantic`` and ``tenacity`` are needed to import this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from typing import Any, Iterable, Optional

import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from .models import BatchSubmission, BatchSubmissionResult, Reason, Submission, SubmissionResult

__all__ = ["CodeJudgeClient", "CodeJudgeError", "ClientStats"]

logger = logging.getLogger(__name__)

#: 4xx answers that mean "try again later" rather than "your request is wrong".
_RETRYABLE_4XX = frozenset({408, 429})
_PATH = "/run/long-batch"
_DETAIL_MAX_CHARS = 500


class CodeJudgeError(RuntimeError):
    """The service could not give a result: retries spent, a 4xx answer, a malformed answer, or the
    client was closed while the call was pending. The message says which, and names the URL."""


@dataclasses.dataclass
class ClientStats:
    """Counters of one `CodeJudgeClient`, for monitoring and tests.

    requests:      HTTP requests sent for submissions (each retry attempt counts; ping/status do not).
    items:         submissions sent in those requests (an item sent twice counts twice).
    retried_items: resubmissions of items answered with ``queue_timeout``.
    errors:        failed request attempts (transport error, timeout, 4xx, 5xx, malformed answer).
    """

    requests: int = 0
    items: int = 0
    retried_items: int = 0
    errors: int = 0


class _Retryable(Exception):
    """A failed request attempt worth another try; its text is the last error shown when retries are spent."""


@dataclasses.dataclass(eq=False)  # eq=False: hashed by identity, kept in a set while pending
class _Item:
    """One submission waiting for its result, with the caller's future."""

    submission: Submission
    future: asyncio.Future
    queue_retries: int = 0  # how many times it was resubmitted after a queue_timeout


class CodeJudgeClient:
    """Micro-batching async client of the code judge; see the module docstring for the why.

    Args:
        base_url: root URL of the service, e.g. ``"http://127.0.0.1:8088"``.
        max_batch_size: most submissions sent in one ``/run/long-batch`` request.
        batch_wait_s: how long the first waiting call waits for company before its request leaves.
        max_concurrency: most submission requests in flight at once.
        max_retries: retries (after the first try) for ``queue_timeout`` items and for failed requests.
        backoff_s: first retry delay; attempt ``n`` waits ``backoff_s * 2**n`` (plus up to 10 % jitter).
        max_backoff_s: cap of one retry delay.
        timeout_s: timeout of one HTTP request (a long batch may legitimately take long).
        transport: an ``httpx.AsyncBaseTransport`` to use instead of the network (tests use
            ``httpx.MockTransport``).

    Use it as ``async with CodeJudgeClient(...) as client:`` or call ``await client.aclose()``.
    Calls still pending at close fail with `CodeJudgeError`.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8088",
        *,
        max_batch_size: int = 32,
        batch_wait_s: float = 0.0,
        max_concurrency: int = 8,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        timeout_s: float = 3600.0,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if batch_wait_s < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("batch_wait_s, backoff_s and max_backoff_s must be >= 0")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")

        self.base_url = base_url.rstrip("/")
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.stats = ClientStats()

        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0)),
            # room for every batch request plus a ping/status beside them
            limits=httpx.Limits(max_connections=max_concurrency + 4, max_keepalive_connections=max_concurrency + 4),
        )
        # asyncio objects are made on first use, inside the running loop
        self._queue: Optional[asyncio.Queue[_Item]] = None
        self._sem: Optional[asyncio.Semaphore] = None
        self._batcher: Optional[asyncio.Task] = None
        self._senders: set[asyncio.Task] = set()
        self._live: set[_Item] = set()  # every item whose future is not resolved yet
        self._closed = False

    # ------------------------------------------------------------------ public API

    async def __aenter__(self) -> "CodeJudgeClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def run(
        self,
        code: str,
        stdin: Optional[str] = None,
        *,
        type: str = "python",
        expected_output: Optional[str] = None,
    ) -> SubmissionResult:
        """Run `code` (``type`` "python" or "cpp") with `stdin`; returns its `SubmissionResult`.

        With `expected_output`, the service also judges the output (``result.success``).
        Raises `CodeJudgeError` when no result could be had (see the module docstring).
        """
        return await self.run_submission(
            Submission(type=type, solution=code, input=stdin, expected_output=expected_output)
        )

    async def run_submission(self, submission: Submission) -> SubmissionResult:
        """Run one `Submission` through the micro-batcher; returns its `SubmissionResult`."""
        item = self._enqueue(submission)
        return await item.future

    async def run_many(self, submissions: Iterable[Submission]) -> list[SubmissionResult]:
        """Run many submissions; the results come back in the same order.

        They go through the same micro-batcher as single calls (so they share requests with
        concurrent callers). If any of them fails with `CodeJudgeError`, the first such error is
        raised after all have finished.
        """
        items = [self._enqueue(s) for s in submissions]
        if not items:
            return []
        outcomes = await asyncio.gather(*(i.future for i in items), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(outcomes)

    async def ping(self) -> bool:
        """True if ``GET /ping`` answers "pong"; False on any error (never raises for the network)."""
        self._check_open()
        try:
            resp = await self._http.get("/ping", timeout=min(self.timeout_s, 10.0))
        except httpx.HTTPError:
            return False
        if resp.status_code != 200:
            return False
        try:
            body = resp.json()
        except ValueError:
            body = resp.text.strip()
        return body == "pong"

    async def status(self) -> dict:
        """``GET /status`` as a dict; raises `CodeJudgeError` if the service does not answer with one."""
        self._check_open()
        url = f"{self.base_url}/status"
        try:
            resp = await self._http.get("/status")
        except httpx.HTTPError as exc:
            raise CodeJudgeError(f"GET {url} failed: {_describe(exc)}") from exc
        if resp.status_code != 200:
            raise CodeJudgeError(f"GET {url} answered HTTP {resp.status_code}: {_detail(resp)}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise CodeJudgeError(f"GET {url} answered non-JSON: {resp.text[:_DETAIL_MAX_CHARS]!r}") from exc
        if not isinstance(body, dict):
            raise CodeJudgeError(f"GET {url} answered {type(body).__name__}, expected a JSON object")
        return body

    async def aclose(self) -> None:
        """Stop the batcher and any request in flight, fail pending calls, close the connections.

        Safe to call more than once.
        """
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._batcher, *self._senders) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._batcher = None
        self._senders.clear()
        self._fail(list(self._live), "client closed before the result arrived")
        await self._http.aclose()

    # ------------------------------------------------------------------ batching

    def _check_open(self) -> None:
        if self._closed:
            raise CodeJudgeError("CodeJudgeClient is closed")

    def _enqueue(self, submission: Submission) -> _Item:
        self._check_open()
        if not isinstance(submission, Submission):
            raise TypeError(f"expected a Submission, got {type(submission).__name__}")
        self._ensure_batcher()
        item = _Item(submission, asyncio.get_running_loop().create_future())
        self._live.add(item)
        item.future.add_done_callback(lambda _f, item=item: self._live.discard(item))
        assert self._queue is not None
        self._queue.put_nowait(item)
        return item

    def _ensure_batcher(self) -> None:
        """Start the batcher task on first use (or again, should it ever have died)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._sem = asyncio.Semaphore(self.max_concurrency)
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.get_running_loop().create_task(self._batch_loop(), name="code-judge-batcher")

    async def _batch_loop(self) -> None:
        """Group queued items into requests and hand each to a sender task.

        The window opens when the first item is taken and closes after `batch_wait_s` or at
        `max_batch_size` items. Then the batcher waits for a free request slot; items that arrive
        meanwhile top the batch up. Items whose caller went away (cancelled future) are dropped.
        """
        assert self._queue is not None and self._sem is not None
        queue, sem = self._queue, self._sem
        loop = asyncio.get_running_loop()
        while True:
            first = await queue.get()
            if first.future.done():
                continue
            batch = [first]
            await asyncio.sleep(0)  # let callers scheduled in the same loop tick join this batch
            deadline = loop.time() + self.batch_wait_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - loop.time()
                try:
                    item = await asyncio.wait_for(queue.get(), remaining) if remaining > 0 else queue.get_nowait()
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if not item.future.done():
                    batch.append(item)

            await sem.acquire()
            while len(batch) < self.max_batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [i for i in batch if not i.future.done()]
            if not batch:
                sem.release()
                continue
            self._spawn_sender(batch, have_permit=True)

    def _spawn_sender(self, batch: list[_Item], *, have_permit: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._send(batch, have_permit))
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    def _requeue(self, item: _Item) -> None:
        """Put a queue_timeout item back in line (called by a timer after its backoff)."""
        if self._closed or item.future.done():
            return
        self._ensure_batcher()
        assert self._queue is not None
        self._queue.put_nowait(item)

    def _backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (0-based): exponential, capped, with a little jitter."""
        delay = min(self.backoff_s * (2**attempt), self.max_backoff_s)
        return delay * random.uniform(0.9, 1.1)

    # ------------------------------------------------------------------ sending

    def _retrying(self, url: str) -> AsyncRetrying:
        """The retry policy of one request: `max_retries` retries of a transport error, 5xx, 408 or 429, with
        capped exponential backoff (`backoff_s` doubling up to `max_backoff_s`, plus up to 10 % jitter)."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential_jitter(multiplier=self.backoff_s, max=self.max_backoff_s, jitter=self.backoff_s / 10),
            retry=retry_if_exception_type(_Retryable), reraise=True, before_sleep=lambda state: logger.warning(
                "POST %s failed (attempt %d of %d): %s; retrying in %.3fs", url, state.attempt_number,
                self.max_retries + 1, state.outcome.exception(), state.next_action.sleep))

    async def _send(self, batch: list[_Item], have_permit: bool) -> None:
        """Send one batch (retrying failed requests, see `_retrying`) and deliver every item's result."""
        url = f"{self.base_url}{_PATH}"
        live, attempts = batch, 0
        try:
            try:
                async for attempt in self._retrying(url):
                    with attempt:
                        attempts = attempt.retry_state.attempt_number
                        live = [i for i in batch if not i.future.done()]
                        if not live:
                            if have_permit:
                                self._sem.release()
                            return
                        hold, have_permit = have_permit, False
                        resp = await self._post(live, hold, url)
            except (_Retryable, CodeJudgeError) as exc:  # retries spent, or not worth one
                self._fail(live, str(exc) if isinstance(exc, CodeJudgeError) else
                           f"POST {url} failed after {attempts} attempt{'s' * (attempts > 1)}; last error: {exc}")
                return
            if 200 <= resp.status_code < 300:
                self._deliver(live, resp, url)
            elif resp.status_code == 413 and len(live) > 1:
                self._split(live, url)
            else:
                self.stats.errors += 1
                self._fail(live, f"POST {url} answered HTTP {resp.status_code}: {_detail(resp)}")
        except asyncio.CancelledError:
            self._fail(batch, "client closed before the result arrived")
            raise
        except Exception as exc:  # a bug here must fail this batch, not hang its callers
            logger.exception("unexpected error while sending a batch to %s", url)
            self._fail(batch, f"POST {url}: unexpected client error: {_describe(exc)}")

    async def _post(self, live: list[_Item], have_permit: bool, url: str) -> httpx.Response:
        """One request for `live`, holding a request slot only while it is in flight (never while backing off).

        Returns the answer unless it is worth another try (`_Retryable`: transport error, 5xx, 408, 429); an
        unsupported URL scheme raises `CodeJudgeError` at once."""
        if not have_permit:
            await self._sem.acquire()
        try:
            payload = BatchSubmission(submissions=[i.submission for i in live]).model_dump(mode="json",
                                                                                          exclude_none=True)
            self.stats.requests += 1
            self.stats.items += len(live)
            try:
                resp = await self._http.post(_PATH, json=payload)
            except httpx.UnsupportedProtocol as exc:
                self.stats.errors += 1
                raise CodeJudgeError(f"POST {url} failed: {_describe(exc)}") from exc
            except httpx.RequestError as exc:  # connect errors, timeouts, broken connections
                self.stats.errors += 1
                raise _Retryable(_describe(exc)) from exc
        finally:
            self._sem.release()
        if resp.status_code >= 500 or resp.status_code in _RETRYABLE_4XX:
            self.stats.errors += 1
            raise _Retryable(f"HTTP {resp.status_code}: {_detail(resp)}")
        return resp

    def _split(self, live: list[_Item], url: str) -> None:
        """A 413 for several items: our batching made the body too big, so each half is sent on its own."""
        self.stats.errors += 1
        half = len(live) // 2
        logger.info("POST %s: HTTP 413 for %d items, splitting the batch", url, len(live))
        self._spawn_sender(live[:half], have_permit=False)
        self._spawn_sender(live[half:], have_permit=False)

    def _deliver(self, live: list[_Item], resp: httpx.Response, url: str) -> None:
        """Match results to items by position; schedule queue_timeout items for another try."""
        try:
            parsed = BatchSubmissionResult.model_validate(resp.json())
        except (ValueError, ValidationError) as exc:
            self.stats.errors += 1
            self._fail(live, f"POST {url} answered a malformed batch result: {_describe(exc)}")
            return
        if len(parsed.results) != len(live):
            self.stats.errors += 1
            self._fail(
                live,
                f"POST {url} answered {len(parsed.results)} results for {len(live)} submissions",
            )
            return
        loop = asyncio.get_running_loop()
        for item, result in zip(live, parsed.results):
            if item.future.done():  # the caller went away meanwhile
                continue
            if result.reason == Reason.QUEUE_TIMEOUT and item.queue_retries < self.max_retries:
                delay = self._backoff(item.queue_retries)
                item.queue_retries += 1
                self.stats.retried_items += 1
                loop.call_later(delay, self._requeue, item)
            else:
                item.future.set_result(result)

    def _fail(self, items: Iterable[_Item], message: str) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(CodeJudgeError(message))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _detail(resp: httpx.Response) -> str:
    """The server's explanation of an error answer: FastAPI's ``detail`` if any, else the body text."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
    else:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        text = detail if isinstance(detail, str) else repr(detail)
    if not text:
        text = resp.reason_phrase or "(empty body)"
    return text[:_DETAIL_MAX_CHARS]
