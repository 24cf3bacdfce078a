#!/usr/bin/env python3
"""Throughput and latency of the code judge against "one fresh python3 process per call".

What it measures
----------------
For each workload and each concurrency level ``c`` it runs two cells, one after the other, on the
same machine and under the same concurrency:

* **judge** -- the code-judge service (started once for the whole run with
  ``LocalJudge(workers=os.cpu_count())``: a private redis-server, the sandboxed worker processes and
  the HTTP API), called through one ``CodeJudgeClient(max_concurrency=c)`` by ``c`` concurrent caller
  tasks, each looping ``await client.run(code)``;
* **baseline** -- ``c`` concurrent loops, each spawning a fresh ``sys.executable -c CODE`` with
  ``asyncio.create_subprocess_exec`` per call and waiting for it.

Every cell starts with one warm-up call (not timed), then runs for ``--seconds`` seconds (calls that
are in flight at the deadline are finished and counted). It reports executions per second
(completed calls / wall time of the cell) and the p50 / p99 latency of one call, as the caller sees
it. Every result is checked (``run_success`` / exit status 0, and the expected stdout); a wrong or
failed result counts as a failure and is printed.

Workloads:

* ``print``  (a) ``print(1+1)``
* ``sympy``  (b) ``sympy.solve(x**2 - 5*x + 6, x)``
* ``numpy``  (c) the norm of ``a @ a.T`` for a seeded random 200x200 matrix

Default concurrency levels: 1, 2 and 2 x ``os.cpu_count()``.

The target is a speed-up (judge exec/s / baseline exec/s) of at least 5x on workloads (a) and (b) at
every concurrency level. Missing it is reported, not an error: the exit status is 0 unless a call
failed or the benchmark itself broke.

How to run
----------
From the repository root (needs ``redis-server`` on the PATH, as the tests do)::

    python3 benchmarks/judge_throughput.py                      # all defaults, ~2-4 min on 2 cores
    python3 benchmarks/judge_throughput.py --seconds 2          # quick check
    python3 benchmarks/judge_throughput.py --workloads print sympy --concurrency 1 8
    python3 benchmarks/judge_throughput.py --json /tmp/judge_bench.json
    python3 benchmarks/judge_throughput.py --url http://127.0.0.1:8088   # an already running judge

Do not run anything else heavy at the same time: both sides compete for the same CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable, Optional

# Allow running from a checkout that is not installed.
_REPO_ROOT = Path(__file__).resolve().parent.parent
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from code_judge.client import CodeJudgeClient  # noqa: E402
from code_judge.local import LocalJudge  # noqa: E402
from recorded import default_path, recorded  # noqa: E402  (benchmarks/, the script's own folder)

TARGET_RATIO = 5.0
TARGET_WORKLOADS = ("print", "sympy")  # (a) and (b)
MAX_FAILURE_SAMPLES = 5  # failure messages kept per cell


# ---------------------------------------------------------------------------------------- workloads

NUMPY_CODE = (
    "import numpy as np\n"
    "np.random.seed(0)\n"
    "a = np.random.rand(200, 200)\n"
    "print(float(np.linalg.norm(a @ a.T)))"
)


def _numpy_reference() -> float:
    import numpy as np

    rng = np.random.RandomState(0)  # the same stream as np.random.seed(0)
    a = rng.rand(200, 200)
    return float(np.linalg.norm(a @ a.T))


@dataclasses.dataclass
class Workload:
    name: str
    label: str
    code: str
    check: Callable[[str], bool]  # stdout -> correct?
    expected: str  # for messages


def _exact(expected: str) -> Callable[[str], bool]:
    return lambda out: out.strip() == expected


def _close_to(reference: float, rel: float = 1e-9) -> Callable[[str], bool]:
    def check(out: str) -> bool:
        try:
            value = float(out.strip())
        except ValueError:
            return False
        return math.isclose(value, reference, rel_tol=rel)

    return check


def build_workloads() -> dict[str, Workload]:
    ref = _numpy_reference()
    return {
        "print": Workload("print", "(a) print(1+1)", "print(1+1)", _exact("2"), "2"),
        "sympy": Workload(
            "sympy",
            "(b) sympy solve",
            "import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 5*x + 6, x))",
            _exact("[2, 3]"),
            "[2, 3]",
        ),
        "numpy": Workload("numpy", "(c) numpy 200x200", NUMPY_CODE, _close_to(ref), repr(ref)),
    }


ALIASES = {"a": "print", "b": "sympy", "c": "numpy"}

# A call returns (ok, message): message describes the failure when ok is False.
CallFn = Callable[[], Awaitable[tuple[bool, str]]]


# ---------------------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class CellResult:
    calls: int = 0  # timed calls completed (failed ones included)
    failures: int = 0  # failed timed calls + failed warm-up call
    elapsed_s: float = 0.0
    exec_per_s: float = 0.0
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    failure_samples: list[str] = dataclasses.field(default_factory=list)


def percentile(sorted_values: list[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile (q in [0, 100]) of an already sorted list."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


async def measure(call: CallFn, concurrency: int, seconds: float) -> CellResult:
    """One warm-up call, then `concurrency` loops calling `call` until `seconds` have passed."""
    res = CellResult()

    def note_failure(msg: str) -> None:
        res.failures += 1
        if len(res.failure_samples) < MAX_FAILURE_SAMPLES:
            res.failure_samples.append(msg)

    async def guarded() -> tuple[bool, str]:
        try:
            return await call()
        except Exception as exc:  # a transport error etc. is a failure of that call
            return False, f"{type(exc).__name__}: {exc}"

    ok, msg = await guarded()  # warm-up
    if not ok:
        note_failure("warm-up: " + msg)

    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def loop() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            ok, msg = await guarded()
            latencies.append(time.perf_counter() - t0)
            if not ok:
                note_failure(msg)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    res.elapsed_s = time.perf_counter() - start
    res.calls = len(latencies)
    res.exec_per_s = res.calls / res.elapsed_s if res.elapsed_s > 0 else 0.0
    latencies.sort()
    if latencies:
        res.p50_ms = percentile(latencies, 50) * 1000
        res.p99_ms = percentile(latencies, 99) * 1000
        res.mean_ms = sum(latencies) / len(latencies) * 1000
    return res


def judge_call(client: CodeJudgeClient, wl: Workload) -> CallFn:
    async def call() -> tuple[bool, str]:
        r = await client.run(wl.code)
        if not r.run_success:
            reason = getattr(r.reason, "value", r.reason)
            return False, f"run_success=False reason={reason!r} stderr={r.stderr[-300:]!r}"
        if not wl.check(r.stdout):
            return False, f"stdout {r.stdout[:200]!r}, expected {wl.expected!r}"
        return True, ""

    return call


def baseline_call(wl: Workload) -> CallFn:
    async def call() -> tuple[bool, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", wl.code,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            return False, f"exit status {proc.returncode}, stderr={err.decode(errors='replace')[-300:]!r}"
        stdout = out.decode(errors="replace")
        if not wl.check(stdout):
            return False, f"stdout {stdout[:200]!r}, expected {wl.expected!r}"
        return True, ""

    return call


# ---------------------------------------------------------------------------------------- reporting


@dataclasses.dataclass
class Row:
    workload: str
    concurrency: int
    judge: CellResult
    baseline: CellResult

    @property
    def ratio(self) -> Optional[float]:
        if self.baseline.exec_per_s <= 0:
            return None
        return self.judge.exec_per_s / self.baseline.exec_per_s

    @property
    def failures(self) -> int:
        return self.judge.failures + self.baseline.failures


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[Row], workloads: dict[str, Workload]) -> str:
    headers = [
        "workload", "conc",
        "judge exec/s", "judge p50 ms", "judge p99 ms",
        "base exec/s", "base p50 ms", "base p99 ms",
        "speed-up", "failures",
    ]
    body = []
    for r in rows:
        body.append([
            workloads[r.workload].label, str(r.concurrency),
            _fmt(r.judge.exec_per_s, ".1f"), _fmt(r.judge.p50_ms, ".1f"), _fmt(r.judge.p99_ms, ".1f"),
            _fmt(r.baseline.exec_per_s if r.baseline.calls else None, ".2f"), _fmt(r.baseline.p50_ms, ".1f"), _fmt(r.baseline.p99_ms, ".1f"),
            "-" if r.ratio is None else f"{r.ratio:.1f}x",
            str(r.failures),
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    left = {0}  # the workload column is left-aligned, numbers right-aligned

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    return "\n".join(out)


def summarize(rows: list[Row], workloads: dict[str, Workload], selected: list[str]) -> tuple[list[str], bool, dict]:
    lines = []
    min_ratios: dict[str, Optional[float]] = {}
    for name in selected:
        ratios = [r.ratio for r in rows if r.workload == name]
        known = [x for x in ratios if x is not None]
        m = min(known) if known and len(known) == len(ratios) else None
        min_ratios[name] = m
        at = [r.concurrency for r in rows if r.workload == name and r.ratio == m]
        lines.append(
            f"{workloads[name].label}: minimum speed-up "
            + ("-" if m is None else f"{m:.1f}x (at concurrency {at[0]})")
        )
    missing = [w for w in TARGET_WORKLOADS if w not in selected]
    met = all(min_ratios.get(w) is not None and min_ratios[w] >= TARGET_RATIO for w in TARGET_WORKLOADS if w in selected)
    if missing:
        verdict = (
            f"Target (>= {TARGET_RATIO:g}x on (a) and (b) at every concurrency): NOT EVALUATED "
            f"(workload(s) {', '.join(missing)} not run)"
        )
        met = False
    else:
        verdict = f"Target (>= {TARGET_RATIO:g}x on (a) and (b) at every concurrency): {'MET' if met else 'NOT MET'}"
    lines.append(verdict)
    return lines, met, min_ratios


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(
        description="Executions/s and latency of the code judge vs. one fresh python3 process per call.",
    )
    p.add_argument("--seconds", type=float, default=6.0, help="timed duration of each cell, after one warm-up call (default: %(default)s)")
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=None, metavar="C",
        help=f"concurrency levels (default: 1 2 {2 * cpus}, i.e. 1, 2 and 2 x cpu_count)",
    )
    p.add_argument(
        "--workloads", nargs="+", default=None, metavar="W",
        help="subset of workloads: print sympy numpy (or a b c); default: all",
    )
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    p.add_argument("--results", default=default_path(__file__), help="also write the printed output here ('': no)")
    p.add_argument("--workers", type=int, default=cpus, help="worker processes of the local judge (default: os.cpu_count() = %(default)s)")
    p.add_argument("--url", default=None, help="benchmark an already running judge at URL instead of starting one")
    p.add_argument(
        "--no-baseline", action="store_true", help="measure only the judge (no speed-up ratio is computed)"
    )
    args = p.parse_args(argv)

    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    conc = args.concurrency or [1, 2, 2 * cpus]
    if any(c < 1 for c in conc):
        p.error("--concurrency levels must be >= 1")
    args.concurrency = sorted(set(conc))
    names = []
    for w in args.workloads or ["print", "sympy", "numpy"]:
        w = ALIASES.get(w.lower(), w.lower())
        if w not in ("print", "sympy", "numpy"):
            p.error(f"unknown workload {w!r}: choose from print sympy numpy (or a b c)")
        if w not in names:
            names.append(w)
    args.workloads = names
    if args.workers < 1:
        p.error("--workers must be >= 1")
    return args


async def run_benchmark(args: argparse.Namespace, url: str, workloads: dict[str, Workload]) -> list[Row]:
    rows = []
    for name in args.workloads:
        wl = workloads[name]
        for c in args.concurrency:
            async with CodeJudgeClient(url, max_concurrency=c) as client:
                judge = await measure(judge_call(client, wl), c, args.seconds)
            if args.no_baseline:
                baseline = CellResult()
            else:
                baseline = await measure(baseline_call(wl), c, args.seconds)
            row = Row(name, c, judge, baseline)
            rows.append(row)
            ratio = "-" if row.ratio is None else f"{row.ratio:.1f}x"
            print(
                f"  {wl.label:<20} c={c:<3} judge {judge.exec_per_s:8.1f}/s ({judge.calls} calls)  "
                f"baseline {baseline.exec_per_s:7.2f}/s ({baseline.calls} calls)  speed-up {ratio}  "
                f"failures {row.failures}",
                file=sys.stderr, flush=True,
            )
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    with recorded(args.results):
        return run(args)


def run(args: argparse.Namespace) -> int:
    workloads = build_workloads()
    cpus = os.cpu_count() or 1
    cells = len(args.workloads) * len(args.concurrency) * (1 if args.no_baseline else 2)
    print(
        f"code-judge throughput: {len(args.workloads)} workload(s) x concurrency {args.concurrency}, "
        f"{args.seconds:g} s per cell, {cells} cells (~{cells * args.seconds:.0f} s + warm-ups); "
        f"cpu_count={cpus}, python {platform.python_version()}",
        file=sys.stderr, flush=True,
    )

    judge_ctx: Optional[LocalJudge] = None
    t_start = time.perf_counter()
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            print(f"starting LocalJudge(workers={args.workers}) ...", file=sys.stderr, flush=True)
            judge_ctx = LocalJudge(workers=args.workers).start()
            url = judge_ctx.url
            print(f"judge ready at {url} after {time.perf_counter() - t_start:.1f} s", file=sys.stderr, flush=True)
        rows = asyncio.run(run_benchmark(args, url, workloads))
    finally:
        if judge_ctx is not None:
            judge_ctx.stop()
    total_s = time.perf_counter() - t_start

    print()
    print(format_table(rows, workloads))
    print()
    summary, met, min_ratios = summarize(rows, workloads, args.workloads)
    for line in summary:
        print(line)

    total_failures = sum(r.failures for r in rows)
    if total_failures:
        print(f"\nFAILURES: {total_failures}")
        for r in rows:
            for side, cell in (("judge", r.judge), ("baseline", r.baseline)):
                for msg in cell.failure_samples:
                    print(f"  {r.workload} c={r.concurrency} {side}: {msg}")
                extra = cell.failures - len(cell.failure_samples)
                if extra > 0:
                    print(f"  {r.workload} c={r.concurrency} {side}: ... and {extra} more")
    else:
        print("\nfailures: 0 (every result had run_success / exit 0 and the expected stdout)")
    print(f"total wall time: {total_s:.0f} s")

    if args.json:
        doc = {
            "config": {
                "seconds": args.seconds,
                "concurrency": args.concurrency,
                "workloads": args.workloads,
                "workers": None if args.url else args.workers,
                "url": args.url,
                "cpu_count": cpus,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "rows": [
                {
                    "workload": r.workload,
                    "label": workloads[r.workload].label,
                    "concurrency": r.concurrency,
                    "judge": dataclasses.asdict(r.judge),
                    "baseline": None if args.no_baseline else dataclasses.asdict(r.baseline),
                    "speedup": r.ratio,
                    "failures": r.failures,
                }
                for r in rows
            ],
            "min_speedup": min_ratios,
            "target": {"ratio": TARGET_RATIO, "workloads": list(TARGET_WORKLOADS), "met": met},
            "total_failures": total_failures,
            "total_wall_s": total_s,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results written to {args.json}")

    return 1 if total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
