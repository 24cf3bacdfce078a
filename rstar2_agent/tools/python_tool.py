"""The ``python_code_with_standard_io`` tool: run a Python snippet on the code judge with stdin.

The snippet is not sent as-is. `build_program` wraps it in a small driver that

* runs it in a fresh ``__main__`` module (so ``if __name__ == "__main__"`` and pickling work);
* echoes a trailing bare expression like a Jupyter cell: the body is ``exec``-ed, the last
  expression ``eval``-ed and its ``repr`` printed unless it is ``None``;
* reports an error compactly on stderr, ``{ErrType} at line {n}: {message}`` followed by the
  offending source line (line numbers count from the first line of the snippet), and exits with
  status 1 so the judge marks the run as failed;
* optionally replays earlier cells first with their output discarded and their errors ignored
  (used by the jupyter tool to simulate notebook state).

The snippet travels inside the program as an ASCII-only Python string literal, so any text the
model writes (quotes, backslashes, non-ASCII, even lone surrogates) arrives unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Optional, Sequence

from tenacity import (AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay,
                      wait_exponential_jitter)

from .base import ToolResult, failure_text, format_result, is_infra_result
from .parser import ToolCall, json_type

if TYPE_CHECKING:
    from code_judge.client import CodeJudgeClient

__all__ = ["PYTHON_TOOL_NAME", "PYTHON_TOOL_SCHEMA", "PythonTool", "JudgeRetry", "build_program", "run_on_judge"]

logger = logging.getLogger(__name__)

PYTHON_TOOL_NAME = "python_code_with_standard_io"

PYTHON_TOOL_SCHEMA: dict = {
    "type": "function",
    "function": {
        "name": PYTHON_TOOL_NAME,
        "description": (
            "Execute Python code with standard input and capture standard output. The code runs as a "
            "fresh Python program: the `input` argument is fed to it as standard input, and the tool "
            "returns what the program writes to standard output, or the error message if it raises an "
            "exception. The value of a final bare expression is printed, as in a notebook."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "The Python code to execute."},
                "input": {
                    "type": "string",
                    "description": "The text fed to the code as standard input (may be an empty string).",
                },
            },
            "required": ["code", "input"],
        },
    },
}

# The driver. Everything it defines lives in the judge's own __main__ namespace; the model's code runs
# in a separate, fresh __main__ module, so none of these names are visible to it.
_DRIVER = r'''import sys as _rstar2_sys


def _rstar2_run(history, cell):
    import ast
    import builtins
    import io
    import linecache
    import os
    import types

    sys = _rstar2_sys
    old_main = sys.modules.get("__main__")
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    if getattr(old_main, "__file__", None):
        module.__file__ = old_main.__file__
    sys.modules["__main__"] = module
    ns = module.__dict__
    cell_name = "<cell>"

    def register(filename, source):
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)

    def flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass

    def replay(filename, source):
        register(filename, source)
        out, err = sys.stdout, sys.stderr
        flush()
        saved = []
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                for fd in (1, 2):
                    saved.append((fd, os.dup(fd)))
                    os.dup2(devnull, fd)
            finally:
                os.close(devnull)
        except OSError:
            pass
        sys.stdout = sys.stderr = io.StringIO()
        try:
            exec(compile(source, filename, "exec", dont_inherit=True), ns)
        except BaseException:
            pass
        finally:
            try:
                sys.stdout.flush()
            except BaseException:
                pass
            sys.stdout, sys.stderr = out, err
            for fd, copy in reversed(saved):
                os.dup2(copy, fd)
                os.close(copy)

    def fail(exc):
        name = type(exc).__name__
        if isinstance(exc, SyntaxError) and exc.filename == cell_name:
            lineno, message, line = exc.lineno, exc.msg, exc.text or ""
        else:
            lineno, tb = None, exc.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == cell_name:
                    lineno = tb.tb_lineno
                tb = tb.tb_next
            try:
                message = str(exc)
            except BaseException:
                message = ""
            line = ""
        if lineno and not line:
            line = linecache.getline(cell_name, lineno)
        head = name
        if lineno:
            head += " at line %d" % lineno
        if message:
            head += ": " + message
        line = line.strip()
        flush()
        try:
            sys.stderr.write(head + ("\n  " + line if line else "") + "\n")
        except BaseException:
            pass
        flush()
        raise SystemExit(1)

    for index, source in enumerate(history, 1):
        replay("<cell-%d>" % index, source)

    register(cell_name, cell)
    try:
        tree = ast.parse(cell, cell_name, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        body_code = compile(tree, cell_name, "exec", dont_inherit=True)
        last_code = compile(last, cell_name, "eval", dont_inherit=True) if last is not None else None
    except BaseException as exc:
        fail(exc)
    try:
        exec(body_code, ns)
        if last_code is not None:
            value = eval(last_code, ns)
            if value is not None:
                print(repr(value))
    except SystemExit:
        raise
    except BaseException as exc:
        fail(exc)
'''


def build_program(cell: str, history: Sequence[str] = ()) -> str:
    """The Python program that runs `cell` (with last-expression echo) after replaying `history`.

    `history` cells run first, in order, with stdout/stderr discarded and any error ignored.
    """
    cells = ", ".join(ascii(str(h)) for h in history)
    return f"{_DRIVER}\n_rstar2_run([{cells}], {ascii(str(cell))})\n"


def check_string_argument(arguments: object, key: str, *, required: bool) -> tuple[Optional[str], Optional[str]]:
    """``(value, None)`` or ``(None, problem)`` for one string argument; a missing optional one is ``""``."""
    if not isinstance(arguments, dict):
        return None, f"arguments must be a JSON object, got {json_type(arguments)}"
    if key not in arguments or arguments[key] is None:
        if required:
            return None, f'missing required argument "{key}"'
        return "", None
    value = arguments[key]
    if not isinstance(value, str):
        return None, f'"{key}" must be a string, got {json_type(value)}'
    return value, None


def invalid_arguments(problem: str, started: float) -> ToolResult:
    return ToolResult(
        text=failure_text(f"invalid arguments: {problem}"),
        success=False,
        latency_s=time.perf_counter() - started,
    )


@dataclasses.dataclass(frozen=True)
class JudgeRetry:
    """How one tool call retries a sandbox fault before it gives up and reports ``infra_error``.

    A fault is the judge being unreachable (`CodeJudgeError`, after the client's own retries) or an answer with
    a reason in `INFRA_REASONS`. The call is tried at most `attempts` times, and no new try starts once
    `budget_s` seconds have passed since the first one began; tries are spaced by exponential backoff from
    `backoff_s` (capped at `max_backoff_s`, plus up to 10 % jitter). With the defaults, a judge whose workers are
    gone costs a trajectory at most three tries within two minutes, then the trajectory is marked.
    """

    attempts: int = 3
    budget_s: float = 120.0
    backoff_s: float = 1.0
    max_backoff_s: float = 10.0

    def __post_init__(self):
        if self.attempts < 1 or self.budget_s < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"JudgeRetry needs attempts >= 1 and non-negative times, got {self}")


class _SandboxFault(Exception):
    """An answer that blames the sandbox; raised only to make tenacity try again."""

    def __init__(self, result) -> None:
        super().__init__(f"the judge answered {getattr(result.reason, 'value', result.reason)}")
        self.result = result


async def run_on_judge(client: "CodeJudgeClient", program: str, stdin: Optional[str], started: float,
                       retry: JudgeRetry = JudgeRetry()) -> ToolResult:
    """Submit `program` and turn the outcome into a `ToolResult`; never raises for judge trouble.

    A sandbox fault is retried as `retry` says; if it outlasts the retries the result has ``infra_error=True``.
    """
    from code_judge.client import CodeJudgeError

    def done(text: str, success: bool = False, infra_error: bool = False) -> ToolResult:
        return ToolResult(text=text, success=success, latency_s=time.perf_counter() - started,
                          infra_error=infra_error)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(retry.attempts) | stop_after_delay(retry.budget_s),
        wait=wait_exponential_jitter(multiplier=retry.backoff_s, max=retry.max_backoff_s, jitter=retry.backoff_s / 10),
        retry=retry_if_exception_type((CodeJudgeError, _SandboxFault)),
        before_sleep=lambda state: logger.warning("code judge fault on try %d (%s); trying the call again",
                                                  state.attempt_number, state.outcome.exception()),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                result = await client.run(program, stdin)
                if is_infra_result(result):
                    raise _SandboxFault(result)
    except _SandboxFault as fault:
        return done(format_result(fault.result), infra_error=True)
    except CodeJudgeError as exc:
        return done(failure_text(f"code judge error: {exc}"), infra_error=True)
    except Exception as exc:  # noqa: BLE001 - a tool call must never take the rollout down
        logger.exception("unexpected error while running a tool call on the code judge")
        return done(failure_text(f"code judge error: {type(exc).__name__}: {exc}"), infra_error=True)
    return done(format_result(result), success=bool(result.run_success and result.success))


class PythonTool:
    """Stateless tool: runs ``code`` with ``input`` on stdin, one judge submission per call.

    Args:
        client: the `CodeJudgeClient` to submit to (shared; it batches concurrent calls).
        name: the function name (default ``python_code_with_standard_io``); the schema follows it.
        retry: how a sandbox fault (unreachable judge, ``queue_timeout``, ``internal_error``) is retried
            before the result is marked ``infra_error``.
    """

    def __init__(self, client: "CodeJudgeClient", *, name: str = PYTHON_TOOL_NAME,
                 retry: JudgeRetry = JudgeRetry()) -> None:
        self.client = client
        self.name = name
        self.retry = retry
        self.schema = copy.deepcopy(PYTHON_TOOL_SCHEMA)
        self.schema["function"]["name"] = name

    async def execute(self, arguments: dict, history: Sequence[ToolCall] = ()) -> ToolResult:
        started = time.perf_counter()
        code, problem = check_string_argument(arguments, "code", required=True)
        if problem is None:
            stdin, problem = check_string_argument(arguments, "input", required=False)
        if problem is not None:
            return invalid_arguments(problem, started)
        return await run_on_judge(self.client, build_program(code), stdin, started, self.retry)
