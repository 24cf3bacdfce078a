"""The HTTP API, a drop-in for the public code-judge: /ping, /status, /run*, /judge*, plus /status/detail and
/metrics.

`/status` answers exactly the public shape, `{"queue": int, "num_workers": int}` (the public client builds a
dataclass of these two fields from it); the rest (workers, isolation, preload tiers, latency, ...) is at
`/status/detail`, and the same as Prometheus text at `/metrics`.

    uvicorn --factory code_judge.api.app:create_app      (or `rstar2-agent judge serve`)
"""

from __future__ import annotations

import collections
import json
import time
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from code_judge.api.dispatch import REDIS_ERRORS, Dispatcher
from code_judge.api.limits import BodySizeLimit
from code_judge.config import JudgeConfig
from code_judge.models import (
    BatchJudgeResult,
    BatchSubmission,
    BatchSubmissionResult,
    JudgeResult,
    Submission,
    SubmissionResult,
)
from code_judge.queue import Keys

VERSION = "0.1.0"


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate in a client's sub_id cannot make the answer unencodable."""

    def render(self, content) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def percentile(values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile; `q` in [0, 100]. percentile([1, 2, 3, 4], 50) == 2."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _preload_failures(worker: dict) -> int:
    """How many preload modules (and warm-ups) a worker's zygote tiers lack."""
    return sum(len(t.get("failed") or {}) + bool(t.get("warmup_error")) for t in worker.get("preload") or [])


async def collect_status(dispatcher: Dispatcher, request_latency) -> dict:
    r, keys = dispatcher.redis, dispatcher.keys
    pipe = r.pipeline(transaction=False)
    pipe.llen(keys.queue)
    pipe.smembers(keys.workers)
    pipe.hgetall(keys.stats)
    pipe.lrange(keys.latency, 0, -1)
    queue, worker_ids, stats, lat = await pipe.execute()
    worker_ids = sorted(worker_ids)
    pipe = r.pipeline(transaction=False)
    for w in worker_ids:
        pipe.get(keys.heartbeat(w))
        pipe.llen(keys.processing(w))
    answers = await pipe.execute() if worker_ids else []
    alive = [dict(json.loads(b), busy=n > 0) for b, n in zip(answers[::2], answers[1::2]) if b]
    isos = [w["isolation"] for w in alive if w.get("isolation")]
    isolation = next((i for i in isos if i.get("level") != "full"), isos[0] if isos else None)  # the weakest
    weakest = max(alive, key=_preload_failures, default={})  # workers on other machines may differ
    lat = [float(x) for x in lat]
    counts = {k: int(v) for k, v in stats.items()}
    return {
        "queue": queue,
        "num_workers": len(alive),
        "workers": {"alive": len(alive), "busy": sum(1 for w in alive if w.get("busy")),
                    "registered": len(worker_ids)},
        "isolation": isolation,
        "preload": {"tiers": weakest.get("preload") or [],
                    "workers_with_failures": sum(1 for w in alive if _preload_failures(w))},
        "executions": counts.get("executions", 0),
        "errors": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("reason:")},
        "counters": counts,
        "latency": {
            "execution_p50": percentile(lat, 50), "execution_p99": percentile(lat, 99),
            "request_p50": percentile(list(request_latency), 50),
            "request_p99": percentile(list(request_latency), 99),
            "samples": len(lat),
        },
        "version": VERSION,
    }


def prometheus_text(status: dict) -> str:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Snapshot:
        def collect(self):
            yield GaugeMetricFamily("code_judge_queue_length", "Work items waiting", value=status["queue"])
            yield GaugeMetricFamily("code_judge_workers_alive", "Workers with a live heartbeat",
                                    value=status["workers"]["alive"])
            yield GaugeMetricFamily("code_judge_workers_busy", "Workers running a job", value=status["workers"]["busy"])
            yield CounterMetricFamily("code_judge_executions", "Submissions executed", value=status["executions"])
            errors = CounterMetricFamily("code_judge_errors", "Results with a reason", labels=["reason"])
            for reason, n in status["errors"].items():
                errors.add_metric([reason], n)
            yield errors
            lat = GaugeMetricFamily("code_judge_latency_seconds", "Latency percentiles", labels=["kind", "quantile"])
            for key, value in status["latency"].items():
                if key != "samples" and value is not None:
                    kind, q = key.split("_")
                    lat.add_metric([kind, "0." + q[1:]], value)
            yield lat
            level = (status["isolation"] or {}).get("level", "unknown")
            failed = sum(len(t.get("failed") or {}) for t in status["preload"]["tiers"])
            yield GaugeMetricFamily("code_judge_preload_failed_modules", "Preload modules a zygote tier lacks",
                                    value=failed)
            yield GaugeMetricFamily("code_judge_isolation_full", "1 if executed code is fully isolated",
                                    value=1.0 if level == "full" else 0.0)

    registry = CollectorRegistry()
    registry.register(_Snapshot())
    return generate_latest(registry).decode()


def create_app(cfg: Optional[JudgeConfig] = None) -> FastAPI:
    cfg = cfg or JudgeConfig.from_env()
    cfg.require_redis()
    state = {}
    request_latency: collections.deque = collections.deque(maxlen=1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["d"] = Dispatcher(cfg)
        yield
        await state["d"].close()

    app = FastAPI(title="rstar2-agent code judge", version=VERSION, lifespan=lifespan,
                  default_response_class=AsciiJSONResponse)
    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_request_size)

    async def run(subs: list[Submission], long: bool) -> list[dict]:
        start = time.perf_counter()
        results = await state["d"].run(subs, long)
        request_latency.append(time.perf_counter() - start)
        return results

    def batch_limit(batch: BatchSubmission) -> Optional[JSONResponse]:
        if len(batch.submissions) > cfg.max_batch_size:
            return JSONResponse(status_code=413, content={
                "detail": f"{len(batch.submissions)} submissions; the limit is MAX_BATCH_SIZE={cfg.max_batch_size}"})
        return None

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    @app.post("/run", response_model=SubmissionResult)
    async def run_one(sub: Submission):
        return (await run([sub], long=False))[0]

    @app.post("/judge", response_model=JudgeResult)
    async def judge_one(sub: Submission):
        return (await run([sub], long=False))[0]

    for path, long, model in (
        ("/run/batch", False, BatchSubmissionResult), ("/run/long-batch", True, BatchSubmissionResult),
        ("/judge/batch", False, BatchJudgeResult), ("/judge/long-batch", True, BatchJudgeResult),
    ):
        def make(long=long):
            async def endpoint(batch: BatchSubmission):
                too_big = batch_limit(batch)
                if too_big is not None:
                    return too_big
                return {"sub_id": batch.sub_id, "results": await run(batch.submissions, long)}
            return endpoint
        app.post(path, response_model=model)(make())

    @app.get("/status")
    async def status():
        try:
            detail = await collect_status(state["d"], request_latency)
        except REDIS_ERRORS as exc:
            return JSONResponse(status_code=503, content={"detail": f"Redis unavailable: {exc}"})
        return {"queue": detail["queue"], "num_workers": detail["num_workers"]}

    @app.get("/status/detail")
    async def status_detail():
        try:
            return await collect_status(state["d"], request_latency)
        except REDIS_ERRORS as exc:
            return JSONResponse(status_code=503, content={"detail": f"Redis unavailable: {exc}"})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        try:
            return prometheus_text(await collect_status(state["d"], request_latency))
        except REDIS_ERRORS as exc:
            return PlainTextResponse(f"# Redis unavailable: {exc}\n", status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return AsciiJSONResponse(status_code=422, content={"detail": jsonable_encoder(exc.errors())})

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):  # last resort: a clear JSON answer, logged
        import logging

        logging.getLogger("code_judge.api").exception("unhandled error on %s", request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"internal error: {type(exc).__name__}: {exc}"})

    return app
