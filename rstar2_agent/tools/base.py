"""What every tool of the agent loop looks like, and how a code-judge result is shown to the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from .parser import ToolCall

if TYPE_CHECKING:  # keep this module importable without the judge client's dependencies
    from code_judge.models import SubmissionResult

__all__ = ["ToolResult", "Tool", "format_result", "failure_text", "INFRA_REASONS"]

#: judge reasons that blame the sandbox, not the submitted program (values of `code_judge.models.Reason`)
INFRA_REASONS = frozenset({"queue_timeout", "internal_error"})


@dataclass
class ToolResult:
    """What a tool hands back to the agent loop.

    text:      the tool response shown to the model.
    success:   the code ran to completion with exit status 0 (False for bad arguments, a crash, a
               timeout or an unreachable judge).
    latency_s: wall-clock seconds the call took, judge round trip included.
    infra_error: the sandbox, not the program, failed and retries did not help: the judge could not be
               reached or answered ``queue_timeout`` / ``internal_error`` (`INFRA_REASONS`). Such a call says
               nothing about the model; the agent loop ends the trajectory and marks it, and training leaves
               it out (see `rstar2_agent.down_sample.select_rows`). A ``worker_timeout`` is the program's
               own doing and stays an ordinary failure (``success=False``, ``infra_error=False``).
    """

    text: str
    success: bool
    latency_s: float = 0.0
    infra_error: bool = False


@runtime_checkable
class Tool(Protocol):
    """A tool the agent loop can call.

    name:   the function name the model uses in ``<tool_call>``.
    schema: OpenAI function schema, ``{"type": "function", "function": {"name", "description", "parameters"}}``.
    """

    name: str
    schema: dict

    async def execute(self, arguments: dict, history: Sequence[ToolCall] = ()) -> ToolResult:
        """Run one call. `history`: the earlier successfully parsed calls of the same trajectory,
        oldest first (all tools, this one included). Must not raise for bad arguments or judge
        failures: those become a ``ToolResult(success=False)``."""
        ...


def _reason_text(reason: object) -> str:
    return str(getattr(reason, "value", reason) or "")


def is_infra_result(result: "SubmissionResult") -> bool:
    """True when the judge's answer blames the sandbox (`INFRA_REASONS`), not the program."""
    return _reason_text(result.reason) in INFRA_REASONS


def format_result(result: "SubmissionResult") -> str:
    """A judge result as the text the upstream model was trained on.

    Success (``run_success and success``)::

        Tool call success
        stdout: ...            (only if non-empty)
        stderr: ...            (only if non-empty)
        execution time: 0.12s

    Otherwise the first lines are ``Tool call failure`` and ``reason: <reason>`` (the judge's reason,
    an empty value for a plain non-zero exit), followed by the same stdout/stderr/time lines.
    """
    ok = bool(result.run_success and result.success)
    lines = ["Tool call success"] if ok else ["Tool call failure", f"reason: {_reason_text(result.reason)}"]
    if result.stdout:
        lines.append(f"stdout: {result.stdout}")
    if result.stderr:
        lines.append(f"stderr: {result.stderr}")
    lines.append(f"execution time: {float(result.cost or 0.0):.2f}s")
    return "\n".join(lines)


def failure_text(reason: str) -> str:
    """The text of a call that never reached (or never came back from) the judge."""
    return f"Tool call failure\nreason: {reason}"
