"""Request and response shapes, field for field those of the public code-judge.

`type` is a plain string here (not an enum) so that one submission of an unknown type in a batch is answered
with `reason="invalid_input"` on its own, instead of failing the whole request with HTTP 422.
"""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Literal, Optional

from pydantic import BaseModel, Field

SUPPORTED_TYPES = ("python", "cpp")


class Reason(str, Enum):
    NONE = ""
    QUEUE_TIMEOUT = "queue_timeout"
    WORKER_TIMEOUT = "worker_timeout"
    INTERNAL_ERROR = "internal_error"
    INVALID_INPUT = "invalid_input"


def _new_id() -> str:
    return str(uuid.uuid4())


class Submission(BaseModel):
    sub_id: Optional[str] = Field(default_factory=_new_id)
    type: str
    options: Optional[dict[str, str]] = None
    solution: str
    input: Optional[str] = None
    expected_output: Optional[str] = None


class BatchSubmission(BaseModel):
    sub_id: Optional[str] = Field(default_factory=_new_id)
    type: Literal["batch"] = "batch"
    submissions: list[Submission] = Field(min_length=1)


class JudgeResult(BaseModel):
    sub_id: Optional[str] = None
    success: bool = False
    run_success: bool = False
    cost: float = 0.0
    reason: Reason = Reason.NONE


class SubmissionResult(JudgeResult):
    stdout: str = ""
    stderr: str = ""


class BatchSubmissionResult(BaseModel):
    sub_id: Optional[str] = None
    results: list[SubmissionResult]


class BatchJudgeResult(BaseModel):
    sub_id: Optional[str] = None
    results: list[JudgeResult]


def error_result(sub_id: Optional[str], reason: Reason, message: str = "", cost: float = 0.0) -> dict:
    """A failed result as a plain dict (the form that travels through Redis)."""
    return {
        "sub_id": sub_id,
        "success": False,
        "run_success": False,
        "cost": cost,
        "stdout": "",
        "stderr": message,
        "reason": reason.value,
    }
