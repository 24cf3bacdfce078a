"""verl 0.9.1 ``BaseTool`` adapters of `PythonTool` and `JupyterTool`.

Point a verl tool yaml (``actor_rollout_ref.rollout.multi_turn.tool_config_path``) at
``rstar2_agent.tools.verl_tools.VerlPythonTool`` or ``...VerlJupyterTool``; see
``rstar2_agent/config/tool_config/*.yaml``. The ``config`` mapping of a tool accepts:

========================================  ======================================================
``url``                                    judge root URL, e.g. ``http://10.0.0.5:8088`` (wins over
                                           host_addr/host_port)
``host_addr``, ``host_port``               as in the upstream yamls (default ``localhost``/``8088``)
``request_processor_batch_size``           -> ``CodeJudgeClient(max_batch_size=...)``
``request_processor_concurrency``          -> ``CodeJudgeClient(max_concurrency=...)``
``max_batch_size``, ``max_concurrency``,   passed to `CodeJudgeClient` as they are (win over the
``batch_wait_s``, ``max_retries``,         upstream-named keys)
``backoff_s``, ``max_backoff_s``,
``timeout_s``
``infra_retry_attempts``,                  -> the tool's `JudgeRetry(attempts, budget_s, backoff_s)`:
``infra_retry_budget_s``,                  how a sandbox fault (unreachable judge, ``queue_timeout``,
``infra_retry_backoff_s``                  ``internal_error``) is retried before the call is marked
                                           ``infra_error`` (defaults 3, 120 s, 1 s)
``type``                                   verl's tool type (``native``); not used here
``request_processor_batch_timeout_seconds`` upstream knob with no equivalent (our client never waits
                                           for a batch to fill); accepted and ignored
========================================  ======================================================

The `CodeJudgeClient` is made lazily inside the running event loop (its queue and tasks belong to
one loop) and made again if the tool is later used from another loop; the old one is closed on its own loop.

Call history for the jupyter tool, first match wins:

1. ``execute(..., history_tool_calls=[...])``;
2. ``create(..., history_tool_calls=[...])`` (or inside ``create_kwargs``), kept per instance id;
3. verl 0.9.1's ``ToolAgentLoop`` passes ``agent_data``: the calls of the assistant messages in
   ``agent_data.messages``, except the current turn's (the last message, when it is an assistant
   message: verl appends it before running that turn's tools).

``tool.rstar2_tool`` exposes the same tool under our `rstar2_agent.tools.Tool` protocol
(``await tool.rstar2_tool.execute(arguments, history)`` -> `ToolResult`), for our own agent loop.

History items may be `ToolCall`, verl ``FunctionCall`` (JSON-string arguments) or
``{"name", "arguments"}`` dicts (also OpenAI ``{"function": {...}}`` tool-call dicts).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Iterable, Optional
from uuid import uuid4

from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse
from verl.utils.rollout_trace import rollout_trace_op

from code_judge.client import CodeJudgeClient

from .jupyter_tool import JUPYTER_TOOL_SCHEMA, JupyterTool
from .parser import ToolCall
from .python_tool import PYTHON_TOOL_SCHEMA, JudgeRetry, PythonTool

__all__ = ["VerlPythonTool", "VerlJupyterTool", "client_settings_from_config", "to_tool_calls"]

logger = logging.getLogger(__name__)

_DIRECT_CLIENT_KEYS = {
    "max_batch_size": int,
    "max_concurrency": int,
    "batch_wait_s": float,
    "max_retries": int,
    "backoff_s": float,
    "max_backoff_s": float,
    "timeout_s": float,
}
_RETRY_KEYS = {"infra_retry_attempts": ("attempts", int), "infra_retry_budget_s": ("budget_s", float),
               "infra_retry_backoff_s": ("backoff_s", float)}
_UPSTREAM_CLIENT_KEYS = {
    "request_processor_batch_size": "max_batch_size",
    "request_processor_concurrency": "max_concurrency",
}


def client_settings_from_config(config: Optional[dict]) -> tuple[str, dict]:
    """``(base_url, CodeJudgeClient keyword arguments)`` from a verl tool ``config`` mapping."""
    config = dict(config or {})
    url = config.get("url")
    if not url:
        host = str(config.get("host_addr") or "localhost").strip()
        port = config.get("host_port", 8088)
        if not host.startswith(("http://", "https://")):
            host = f"http://{host}"
        url = f"{host.rstrip('/')}:{port}" if port not in (None, "") else host
    kwargs: dict[str, Any] = {}
    for key, target in _UPSTREAM_CLIENT_KEYS.items():
        if config.get(key) is not None:
            kwargs[target] = int(config[key])
    for key, cast in _DIRECT_CLIENT_KEYS.items():
        if config.get(key) is not None:
            kwargs[key] = cast(config[key])
    return str(url), kwargs


def retry_from_config(config: Optional[dict]) -> JudgeRetry:
    """The tool's `JudgeRetry` from the ``infra_retry_*`` keys of a verl tool ``config`` mapping.

    >>> retry_from_config({"infra_retry_attempts": "2", "infra_retry_budget_s": 5})
    JudgeRetry(attempts=2, budget_s=5.0, backoff_s=1.0, max_backoff_s=10.0)
    """
    config = dict(config or {})
    return JudgeRetry(**{name: cast(config[key]) for key, (name, cast) in _RETRY_KEYS.items()
                         if config.get(key) is not None})


def _as_tool_call(item: Any) -> Optional[ToolCall]:
    """One history entry as a `ToolCall`, or None if it is not a usable call."""
    if isinstance(item, ToolCall):
        return item
    if isinstance(item, dict):
        if isinstance(item.get("function"), dict):  # OpenAI tool-call message entry
            item = item["function"]
        name, arguments = item.get("name"), item.get("arguments")
    else:  # verl FunctionCall, OpenAIFunctionCallSchema, or anything shaped like them
        name, arguments = getattr(item, "name", None), getattr(item, "arguments", None)
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            return None
    if not isinstance(name, str) or not isinstance(arguments, dict):
        return None
    return ToolCall(name=name, arguments=arguments)


def to_tool_calls(items: Optional[Iterable[Any]]) -> list[ToolCall]:
    """History entries of any supported shape as `ToolCall`s (unusable entries are skipped)."""
    calls = []
    for item in items or ():
        call = _as_tool_call(item)
        if call is not None:
            calls.append(call)
    return calls


def _history_from_messages(messages: Any) -> list[ToolCall]:
    if not isinstance(messages, (list, tuple)) or not messages:
        return []
    earlier = list(messages)
    last = earlier[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        earlier = earlier[:-1]  # the turn whose calls are running now
    calls: list[ToolCall] = []
    for message in earlier:
        if isinstance(message, dict) and message.get("role") == "assistant":
            calls.extend(to_tool_calls(message.get("tool_calls") or ()))
    return calls


class _LoopBoundTool:
    """Our `Tool` protocol view of a verl adapter (its ``rstar2_tool`` attribute).

    Lets our own agent loop call the tool directly with its history, without verl's
    create/execute/release bookkeeping. The judge client is bound to the event loop of each call.
    """

    def __init__(self, owner: "_CodeJudgeVerlTool") -> None:
        self._owner = owner
        self.name = owner.name
        self.schema = owner.tool_schema.model_dump(exclude_unset=True, exclude_none=True)

    async def execute(self, arguments: dict, history: Iterable[ToolCall] = ()):
        return await self._owner._bound_tool().execute(arguments, to_tool_calls(history))


class _CodeJudgeVerlTool(BaseTool):
    """Shared plumbing: config -> client, instance bookkeeping, result conversion."""

    _tool_cls: type = PythonTool
    _default_schema: dict = PYTHON_TOOL_SCHEMA

    def __init__(self, config: dict, tool_schema: Optional[OpenAIFunctionToolSchema] = None):
        if tool_schema is None:
            tool_schema = OpenAIFunctionToolSchema.model_validate(self._default_schema)
        super().__init__(config, tool_schema)
        self.base_url, self.client_kwargs = client_settings_from_config(config)
        self.retry = retry_from_config(config)
        self._histories: dict[str, Optional[list[ToolCall]]] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._client: Optional[CodeJudgeClient] = None
        self._tool: Any = None
        #: the same tool under our `rstar2_agent.tools.Tool` protocol (``execute(arguments, history)``)
        self.rstar2_tool = _LoopBoundTool(self)

    def _bound_tool(self):
        loop = asyncio.get_running_loop()
        if self._tool is None or self._loop is not loop:
            self._close_elsewhere()
            self._client = CodeJudgeClient(self.base_url, **self.client_kwargs)
            self._tool = self._tool_cls(self._client, name=self.name, retry=self.retry)
            self._loop = loop
        return self._tool

    def _close_elsewhere(self) -> None:
        """Close the client of the loop this tool used before: on that loop if it still runs (a client's tasks
        and connections belong to it); a closed loop has already ended them."""
        client, loop = self._client, self._loop
        if client is not None and loop is not None and loop.is_running() and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(client.aclose(), loop)

    async def create(self, instance_id: Optional[str] = None, **kwargs) -> tuple[str, ToolResponse]:
        if instance_id is None:
            instance_id = str(uuid4())
        history = kwargs.get("history_tool_calls")
        create_kwargs = kwargs.get("create_kwargs")
        if history is None and isinstance(create_kwargs, dict):
            history = create_kwargs.get("history_tool_calls")
        self._histories[instance_id] = None if history is None else to_tool_calls(history)
        return instance_id, ToolResponse()

    def _history(self, instance_id: str, kwargs: dict) -> list[ToolCall]:
        if kwargs.get("history_tool_calls") is not None:
            return to_tool_calls(kwargs["history_tool_calls"])
        stored = self._histories.get(instance_id)
        if stored is not None:
            return stored
        agent_data = kwargs.get("agent_data")
        if agent_data is not None:
            return _history_from_messages(getattr(agent_data, "messages", None))
        return []

    @rollout_trace_op
    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs) -> tuple[ToolResponse, float, dict]:
        result = await self._bound_tool().execute(parameters, self._history(instance_id, kwargs))
        return ToolResponse(text=result.text), 0.0, {"success": result.success, "latency_s": result.latency_s,
                                                     "infra_error": result.infra_error}

    async def calc_reward(self, instance_id: str, **kwargs) -> float:
        return 0.0

    async def release(self, instance_id: str, **kwargs) -> None:
        self._histories.pop(instance_id, None)  # unknown ids are fine

    async def aclose(self) -> None:
        """Close the judge client (only from the loop it was made in)."""
        client, self._client, self._tool, self._loop = self._client, None, None, None
        if client is not None:
            await client.aclose()


class VerlPythonTool(_CodeJudgeVerlTool):
    """verl ``BaseTool`` for `PythonTool` (``python_code_with_standard_io``)."""

    _tool_cls = PythonTool
    _default_schema = PYTHON_TOOL_SCHEMA


class VerlJupyterTool(_CodeJudgeVerlTool):
    """verl ``BaseTool`` for `JupyterTool` (``jupyter_code``)."""

    _tool_cls = JupyterTool
    _default_schema = JUPYTER_TOOL_SCHEMA
