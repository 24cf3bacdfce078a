"""Code steps through the code judge: one ``/run/long-batch`` request per search round.

Upstream executes model-written code inside the search process; ours never does. Every code of a round goes
to the same code judge and client the RL path uses (:class:`code_judge.client.CodeJudgeClient`), all in one
request (the client's ``max_batch_size`` is set to the round's size; it splits only if the judge answers 413).

The observation follows upstream's interpreter:

* the last statement, when it is a bare expression, is printed (upstream evaluates it), so a step ending in
  ``x`` shows the value of ``x``;
* success: the program's stdout, stripped;
* an exception: the last line of the traceback, e.g. ``ZeroDivisionError: division by zero``;
* the judge's time limit: ``TimeoutError: ...`` (so the step is not replayed, see :func:`.steps.block_inputs`).

Every error observation contains "Error", which is what the search counts as a code error.
"""

from __future__ import annotations

import ast
import asyncio
from code_judge.client import CodeJudgeClient
from code_judge.models import Reason, Submission, SubmissionResult

__all__ = ["print_last_expression", "observation_of", "CodeJudgeExecutor"]


def print_last_expression(code: str) -> str:
    """Wrap a final bare expression in ``print(...)``; other code comes back unchanged.

    >>> print_last_expression("x = 2\\nx * 3")
    'x = 2\\nprint(x * 3)'
    >>> print_last_expression("print(1)")
    'print(1)'
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code  # the judge reports the error
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return code
    last = tree.body[-1]
    if isinstance(last.value, ast.Call) and isinstance(last.value.func, ast.Name) and last.value.func.id == "print":
        return code
    lines = code.splitlines()
    segment = ast.get_source_segment(code, last)
    if segment is None or last.lineno != last.end_lineno:
        head, tail = lines[: last.lineno - 1], lines[last.end_lineno:]
        return "\n".join(head + ["print(" + (segment or "") + ")"] + tail)
    line = lines[last.lineno - 1]
    lines[last.lineno - 1] = line[: last.col_offset] + "print(" + segment + ")" + line[last.end_col_offset:]
    return "\n".join(lines)


def observation_of(result: SubmissionResult) -> str:
    """The observation text of one judge result (see the module docstring)."""
    if result.reason == Reason.WORKER_TIMEOUT:
        return "TimeoutError: the code ran past the time limit"
    if result.run_success:
        return result.stdout.strip()
    if result.reason not in (Reason.NONE, ""):
        return f"Error: the code judge answered {result.reason.value}: {result.stderr.strip()}".strip()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    if not last:
        return "Error: the program failed without a message"
    return last if "error" in last.lower() else f"Error: {last}"


class CodeJudgeExecutor:
    """``run(codes) -> observations`` through a code judge at ``url``; one request per call.

    ``requests`` and ``calls`` count what was sent, for progress and tests.
    """

    def __init__(self, url: str, timeout_s: float = 600.0, max_retries: int = 6):
        self.url = url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.requests = 0
        self.calls = 0

    def run(self, codes: list[str]) -> list[str]:
        if not codes:
            return []
        self.calls += 1
        return asyncio.run(self._run(list(codes)))

    async def _run(self, codes: list[str]) -> list[str]:
        async with CodeJudgeClient(self.url, max_batch_size=len(codes), timeout_s=self.timeout_s,
                                   max_retries=self.max_retries) as client:
            results = await client.run_many(
                [Submission(type="python", solution=print_last_expression(c)) for c in codes])
            self.requests += client.stats.requests
        return [observation_of(r) for r in results]
