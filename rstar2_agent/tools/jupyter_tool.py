"""The ``jupyter_code`` tool: a simulated notebook on top of the stateless code judge.

The judge keeps no state between submissions, so notebook state is rebuilt on every call: the
program replays each earlier ``jupyter_code`` cell of the trajectory (output discarded, errors
ignored, as if those cells had run before) and then runs the new cell with last-expression echo.
That is one judge submission per call, whose cost grows with the number of earlier cells; cells
with side effects outside the process (files, time, randomness) are re-run each time.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Sequence

from .base import ToolResult
from .parser import ToolCall
from .python_tool import JudgeRetry, build_program, check_string_argument, invalid_arguments, run_on_judge

if TYPE_CHECKING:
    from code_judge.client import CodeJudgeClient

__all__ = ["JUPYTER_TOOL_NAME", "JUPYTER_TOOL_SCHEMA", "JupyterTool"]

JUPYTER_TOOL_NAME = "jupyter_code"

JUPYTER_TOOL_SCHEMA: dict = {
    "type": "function",
    "function": {
        "name": JUPYTER_TOOL_NAME,
        "description": "Execute python code in a Jupyter notebook cell and return result",
        "parameters": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": (
                        "The python code to run in a new cell. Variables, functions and imports defined "
                        "in earlier cells are available; the value of a final bare expression is shown."
                    ),
                },
            },
            "required": ["code"],
        },
    },
}


class JupyterTool:
    """Stateful-looking tool: earlier cells of the trajectory are replayed before each new one.

    Args:
        client: the `CodeJudgeClient` to submit to.
        name: the function name (default ``jupyter_code``). Only earlier calls with this name are replayed.
        retry: how a sandbox fault is retried before the result is marked ``infra_error`` (see `JudgeRetry`).
    """

    def __init__(self, client: "CodeJudgeClient", *, name: str = JUPYTER_TOOL_NAME,
                 retry: JudgeRetry = JudgeRetry()) -> None:
        self.client = client
        self.name = name
        self.retry = retry
        self.schema = copy.deepcopy(JUPYTER_TOOL_SCHEMA)
        self.schema["function"]["name"] = name

    def history_cells(self, history: Sequence[ToolCall]) -> list[str]:
        """The code of every earlier call of this tool in `history` (oldest first) with a string ``code``."""
        cells = []
        for call in history or ():
            if getattr(call, "name", None) != self.name:
                continue
            arguments = getattr(call, "arguments", None)
            if isinstance(arguments, dict) and isinstance(arguments.get("code"), str):
                cells.append(arguments["code"])
        return cells

    async def execute(self, arguments: dict, history: Sequence[ToolCall] = ()) -> ToolResult:
        started = time.perf_counter()
        code, problem = check_string_argument(arguments, "code", required=True)
        if problem is not None:
            return invalid_arguments(problem, started)
        program = build_program(code, self.history_cells(history))
        return await run_on_judge(self.client, program, None, started, self.retry)
