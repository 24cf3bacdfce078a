"""A sandbox fault is not a model error (issue 13).

When the judge cannot run a call (unreachable, `queue_timeout`, `internal_error`), the tool retries it within a
bounded budget; if the fault outlasts the retries, the trajectory ends marked `infra_error`, is never scored or
trained on, is left out of RoC's error ratio and of its group's selection, and the step's metrics count it.
A `worker_timeout` (the program's own doing) stays an ordinary tool error.

The last tests kill a real judge's worker processes in the middle of a rollout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import pytest
import redis

from code_judge.client import CodeJudgeClient, CodeJudgeError
from code_judge.config import JudgeConfig
from code_judge.local import LocalJudge, free_port
from code_judge.models import Reason, SubmissionResult
from code_judge.queue import Keys
from rstar2_agent.down_sample import DownSamplingConfig, select_rows
from rstar2_agent.engine.tiny import build_tokenizer
from rstar2_agent.rollout import AgentLoop, LoopConfig, ToolTurnFormat
from rstar2_agent.rollout.core import Generation
from rstar2_agent.tools import PythonTool, ToolResult
from rstar2_agent.tools.python_tool import JudgeRetry, run_on_judge
from rstar2_agent.trainer.selection import infra_error_flags, rollout_metrics, rows_to_keep

TOK = build_tokenizer()
EOS = TOK.eos_token_id
FAST = JudgeRetry(attempts=3, budget_s=30.0, backoff_s=0.01, max_backoff_s=0.02)


def call(code: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": "python_code_with_standard_io",
                                         "arguments": {"code": code, "input": ""}}) + "\n</tool_call>"


class Model:
    """A scripted model: one fixed text per turn, EOS-terminated; `on_turn(n)` runs before turn n is answered."""

    def __init__(self, *texts: str, on_turn=None):
        self.texts, self.on_turn, self.turns = list(texts), on_turn, 0

    async def __call__(self, request_id, token_ids, sampling_params):
        self.turns += 1
        if self.on_turn is not None:
            self.on_turn(self.turns)
        text = self.texts[min(self.turns, len(self.texts)) - 1]
        return Generation(token_ids=TOK.encode(text, add_special_tokens=False) + [EOS])


def agent(tool) -> AgentLoop:
    return AgentLoop(TOK, {tool.name: tool}, LoopConfig(response_length=600, max_tool_response_length=2000),
                     ToolTurnFormat(TOK, TOK.chat_template))


PROMPT = TOK.encode("<|im_start|>user\nWhat is 6*7?<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)


def result(reason: str = "", stdout: str = "", ok: bool = False) -> SubmissionResult:
    return SubmissionResult(success=ok, run_success=ok, reason=Reason(reason), stdout=stdout)


class FakeClient:
    """`client.run` answers from a script: a SubmissionResult, or an exception to raise; the last one repeats."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), 0

    async def run(self, code, stdin=None):
        self.calls += 1
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer


# ------------------------------------------------------------------------------------------ the tool's retries


async def test_a_queue_timeout_is_retried_and_the_call_succeeds():
    client = FakeClient(result("queue_timeout"), result(stdout="42\n", ok=True))
    out = await run_on_judge(client, "print(42)", None, time.perf_counter(), FAST)
    assert client.calls == 2 and out.success and not out.infra_error and "stdout: 42" in out.text


@pytest.mark.parametrize("answer", [result("internal_error"), result("queue_timeout"),
                                    CodeJudgeError("POST http://x/run/long-batch failed after 7 attempts")])
async def test_a_fault_that_outlasts_the_retries_is_an_infra_error(answer):
    client = FakeClient(answer)
    out = await run_on_judge(client, "print(42)", None, time.perf_counter(), FAST)
    assert client.calls == FAST.attempts
    assert out.infra_error and not out.success and out.text.startswith("Tool call failure")


async def test_the_retry_budget_bounds_the_time_spent():
    client = FakeClient(result("internal_error"))
    start = time.monotonic()
    out = await run_on_judge(client, "x", None, time.perf_counter(),
                             JudgeRetry(attempts=1000, budget_s=0.3, backoff_s=0.05, max_backoff_s=0.05))
    assert out.infra_error and 3 <= client.calls < 20 and time.monotonic() - start < 2.0


@pytest.mark.parametrize("answer", [result("worker_timeout"), result("invalid_input"), result("")])
async def test_the_programs_own_failures_are_not_retried_nor_infra(answer):
    client = FakeClient(answer)
    out = await run_on_judge(client, "while True: pass", None, time.perf_counter(), FAST)
    assert client.calls == 1 and not out.success and not out.infra_error


# ------------------------------------------------------------------------------------------------ the loop


class InfraTool:
    name = "python_code_with_standard_io"
    schema = {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}

    async def execute(self, arguments, history=()):
        return ToolResult(text="Tool call failure\nreason: internal_error", success=False, infra_error=True)


async def test_the_loop_ends_an_infra_failed_trajectory_and_does_not_count_a_tool_error():
    model = Model("Let me compute.\n" + call("print(6*7)"), "\\boxed{42}")
    traj = await agent(InfraTool()).run(PROMPT, model, {})
    assert traj.infra_error and traj.stats.infra_errors == 1 and traj.stats.tool_errors == 0
    assert traj.stats.finish_reason == "infra_error" and traj.tool_turns == 0 and model.turns == 1
    assert "<tool_response>" not in TOK.decode(traj.response_ids)  # RoC's error ratio never sees the fault


# ---------------------------------------------------------------------------------------- the selection rule

OK = "<tool_response>ok</tool_response><answer>7</answer>"
BAD = "<tool_response>Error</tool_response><answer>7</answer>"


def test_infra_traces_are_out_of_reject_equal_roc_and_the_error_ratio():
    cfg = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True, roc_error_ratio=True)
    uids, turns = ["p"] * 5, [1] * 5
    texts = [OK, "<answer>6</answer>", OK, "<answer>5</answer>", BAD]
    rewards = [1, 0, 1, 0, 0]
    rows, m = select_rows(uids, texts, turns, rewards, cfg, [False] * 4 + [True])
    assert rows == [0, 1]
    assert m["roc_error_ratio/global_err_ratio"] == 0.0  # trace 4's "Error" is the sandbox's, not counted
    assert m["down_sampling/infra_error_dropped_num"] == 1 and m["down_sampling/before_sampling_trace_num"] == 5
    _, unflagged = select_rows(uids, texts, turns, rewards, cfg)
    assert unflagged["roc_error_ratio/global_err_ratio"] == pytest.approx(1 / 3)  # what the rule avoids


def test_a_group_that_loses_traces_is_judged_on_the_rest():
    # all-equal once the infra trace is gone: nothing to learn, instead of a false negative
    cfg = DownSamplingConfig(do_down_sampling=True, reject_equal_reward=True)
    assert select_rows(["p"] * 3, ["a"] * 3, [1] * 3, [1, 1, 0], cfg, [False, False, True])[0] is None
    assert select_rows(["p"] * 3, ["a"] * 3, [1] * 3, [1, 1, 0], cfg)[0] == [0, 1, 2]
    # with RoC, fewer than down_sample_to_n traces left: dropped as any small group
    roc = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=3)
    rows, m = select_rows(["p"] * 4, ["a"] * 4, [1] * 4, [1, 0, 1, 0], roc, [False, True, True, False])
    assert rows is None and m["down_sampling/small_group_dropped_num"] == 1
    # selection off: everything is kept except the infra traces
    off = DownSamplingConfig()
    assert select_rows(["p"] * 3, ["a"] * 3, [1] * 3, [1, 0, 1], off, [False, True, False])[0] == [0, 2]
    with pytest.raises(ValueError, match="infra_error flags"):
        select_rows(["p"] * 3, ["a"] * 3, [1] * 3, [1, 0, 1], DownSamplingConfig(), [False])


def test_verl_side_flags_and_metrics():
    extra = [{"tool_call_count": 1, "tool_error_count": 0, "finish_reason": "stop"},
             {"tool_call_count": 1, "tool_error_count": 0, "finish_reason": "infra_error", "infra_error": True,
              "infra_error_count": 1}]
    assert infra_error_flags(extra) == [False, True]
    m = rollout_metrics(extra)
    assert m["rollout/infra_errors"] == 1 and m["rollout/tool_error_ratio"] == 0.0
    responses = [TOK.encode(OK, add_special_tokens=False), TOK.encode(BAD, add_special_tokens=False)]
    rows, _ = rows_to_keep(["p", "p"], responses, [1.0, 0.0], TOK, DownSamplingConfig(), infra_error_flags(extra))
    assert rows == [0]


# ------------------------------------------------------------------------ a real judge whose workers are killed

KEYS = Keys(JudgeConfig())
SLOW = "import time\ntime.sleep(1.5)\nprint(6*7)"


@pytest.fixture(scope="module")
def fragile_judge():
    """One worker, and a job whose worker dies is answered internal_error at once (MAX_JOB_ATTEMPTS=1)."""
    with LocalJudge(workers=1, env={"MAX_JOB_ATTEMPTS": "1", "MAX_EXECUTION_TIME": "5",
                                    "WORKER_HEARTBEAT_TTL": "3"}) as judge:
        yield judge


class WorkerKiller(threading.Thread):
    """SIGKILLs every worker that is running a job, up to `times` of them, until stopped."""

    def __init__(self, judge: LocalJudge, times: int):
        super().__init__(daemon=True)
        self.redis = redis.Redis.from_url(judge.redis_uri, decode_responses=True)
        self.times, self.killed, self.done = times, [], threading.Event()

    def busy_pid(self):
        for wid in self.redis.smembers(KEYS.workers):
            beat = self.redis.get(KEYS.heartbeat(wid))
            if beat and self.redis.llen(KEYS.processing(wid)):
                return json.loads(beat)["pid"]
        return None

    def run(self):
        while not self.done.is_set() and len(self.killed) < self.times:
            pid = self.busy_pid()
            if pid is not None and pid not in self.killed:
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
            time.sleep(0.02)

    def stop(self):
        self.done.set()
        self.join(10)
        self.redis.close()


class RecordingClient(CodeJudgeClient):
    """The real client, keeping every result it hands to the tool."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = []

    async def run(self, *args, **kwargs):
        res = await super().run(*args, **kwargs)
        self.results.append(res)
        return res


async def rollout_with_killer(judge, times: int, retry: JudgeRetry):
    killer = WorkerKiller(judge, times)
    model = Model("I will run it.\n" + call(SLOW), "So the answer is \\boxed{42}.",
                  on_turn=lambda turn: turn == 1 and killer.start())  # the kills start mid-rollout
    async with RecordingClient(judge.url) as client:
        try:
            traj = await agent(PythonTool(client, retry=retry)).run(PROMPT, model, {})
        finally:
            await asyncio.to_thread(killer.stop)
    return traj, client.results, killer


@pytest.mark.timeout(240)
async def test_a_killed_worker_is_retried_and_the_trajectory_trains(fragile_judge):
    traj, results, killer = await rollout_with_killer(fragile_judge, 1, JudgeRetry(attempts=3, backoff_s=0.5))
    assert len(killer.killed) == 1
    assert [r.reason for r in results] == [Reason.INTERNAL_ERROR, Reason.NONE]  # the worker died, then it ran
    assert not traj.infra_error and traj.stats.tool_errors == 0 and traj.stats.finish_reason == "stop"
    assert "Tool call success\nstdout: 42" in TOK.decode(traj.response_ids)
    await asyncio.to_thread(fragile_judge.wait_ready, 120)  # the manager replaced the worker


@pytest.mark.timeout(240)
async def test_workers_killed_on_every_try_mark_the_trajectory_and_it_is_not_trained(fragile_judge):
    from rstar2_agent.engine.trainer import CPUTrainer, Scored, trajectory_metrics

    retry = JudgeRetry(attempts=2, backoff_s=0.2)
    traj, results, killer = await rollout_with_killer(fragile_judge, 10, retry)
    assert [r.reason for r in results] == [Reason.INTERNAL_ERROR] * retry.attempts and len(killer.killed) == 2
    assert traj.infra_error and traj.stats.finish_reason == "infra_error"
    assert traj.stats.tool_errors == 0 and traj.tool_turns == 0  # not a model error, no tool text to train on

    # a healthy trajectory of the same group, once the judge is back
    await asyncio.to_thread(fragile_judge.wait_ready, 120)
    async with CodeJudgeClient(fragile_judge.url) as client:
        healthy = await agent(PythonTool(client)).run(PROMPT, Model(call("print(6*7)"), "\\boxed{42}"), {})
    assert not healthy.infra_error and healthy.stats.tool_calls == 1

    # the CPU engine: not scored, not kept, counted
    trainer = CPUTrainer.__new__(CPUTrainer)
    trainer.tokenizer = TOK
    items = [Scored(None, "g", healthy, reward=1.0), Scored(None, "g", traj, reward=0.0)]
    for cfg in (DownSamplingConfig(), DownSamplingConfig(do_down_sampling=True, reject_equal_reward=True)):
        trainer.down_sampling = cfg
        kept, metrics = trainer._keep(items)
        # without the rule, reject-equal would keep both (1 vs 0) and train the fault as a wrong answer
        assert traj not in [s.trajectory for s in kept]
    assert kept == [] and metrics["down_sampling/infra_error_dropped_num"] == 1
    m = trajectory_metrics("train", items)
    assert m["train/infra_errors"] == 1 and m["train/traces"] == 1 and m["train/tool_error_ratio"] == 0.0
    assert m["train/accuracy"] == 1.0


# ------------------------------------------------------------------------------- verl's agent loop, judge gone


async def test_verl_agent_loop_marks_an_unreachable_judge(tmp_path):
    import yaml
    from hydra import compose, initialize_config_dir
    import hydra
    import verl.trainer.config
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
    from verl.tools.tool_registry import load_all_tools
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.workers.rollout.replica import TokenOutput

    import rstar2_agent.rollout.verl_agent_loop as verl_loop

    config_dir = os.path.join(os.path.dirname(verl_loop.__file__), "..", "config")
    with open(os.path.join(config_dir, "tool_config", "python_tool_config.yaml")) as f:
        tool_cfg = yaml.safe_load(f)
    tool_cfg["tools"][0]["config"].update(url=f"http://127.0.0.1:{free_port()}", max_retries=1, backoff_s=0.01,
                                          infra_retry_attempts=2, infra_retry_backoff_s=0.01)
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump(tool_cfg))
    with initialize_config_dir(config_dir=os.path.dirname(verl.trainer.config.__file__), version_base=None):
        config = compose("ppo_trainer", overrides=[
            "actor_rollout_ref.rollout.name=vllm", "data.max_prompt_length=1024", "data.max_response_length=300",
            "actor_rollout_ref.rollout.multi_turn.enable=True",
            "actor_rollout_ref.rollout.multi_turn.format=rstar2_agent_hermes",
            f"actor_rollout_ref.rollout.multi_turn.tool_config_path={path}"])

    class Server:
        def __init__(self):
            self.turns = 0

        async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
            self.turns += 1
            text = "Let me run it.\n" + call("print(6*7)") if self.turns == 1 else "\\boxed{42}"
            ids = TOK.encode(text, add_special_tokens=False) + [EOS]
            return TokenOutput(token_ids=ids, log_probs=[-1.0] * len(ids))

    server = Server()
    loop = hydra.utils.instantiate(
        _agent_loop_registry["rstar2_agent"], trainer_config=DictConfigWrap(config), server_manager=server,
        tokenizer=TOK, processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data),
        tools=ToolListWrap(load_all_tools(tool_config_path=str(path), function_tool_path=None)))
    out = await loop.run({"temperature": 1.0}, raw_prompt=[{"role": "user", "content": "What is 6*7?"}])
    fields = out.extra_fields
    assert fields["infra_error"] is True and fields["infra_error_count"] == 1 and fields["tool_error_count"] == 0
    assert fields["finish_reason"] == "infra_error" and server.turns == 1
    assert rollout_metrics([fields])["rollout/infra_errors"] == 1 and infra_error_flags([fields]) == [True]


# ------------------------------------------------------------------- verl's trainer: the selection seam


class FakeBatch:
    """The parts of verl's TransferQueue batch handle that `RStar2AgentTrainer._select` uses."""

    def __init__(self, keys, partition_id="train"):
        self.keys, self.tags, self.partition_id = list(keys), [{} for _ in keys], partition_id

    def select_keys(self, keys):
        return FakeBatch(keys, self.partition_id)


@pytest.mark.parametrize("down_sampling", [False, True])
def test_verl_trainer_drops_infra_rows_and_counts_them(monkeypatch, down_sampling):
    import torch

    from rstar2_agent.trainer import roc_trainer

    texts = ["<answer>1</answer>", "<answer>2</answer>", "<answer>1</answer>", "<answer>3</answer>"]
    data = {"uid": ["p", "p", "p", "p"], "responses": [TOK.encode(t, add_special_tokens=False) for t in texts],
            "rm_scores": [torch.tensor([0.0, 1.0]), torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0])],
            "extra_fields": [{"tool_call_count": 1, "tool_error_count": 0, "finish_reason": "stop"}] * 3
            + [{"tool_call_count": 1, "tool_error_count": 0, "finish_reason": "infra_error", "infra_error": True}]}
    cleared = []
    monkeypatch.setattr(roc_trainer.tq, "kv_batch_get", lambda keys, partition_id, select_fields: data)
    monkeypatch.setattr(roc_trainer.tq, "kv_clear", lambda keys, partition_id: cleared.extend(keys))
    trainer = roc_trainer.RStar2AgentTrainer.__new__(roc_trainer.RStar2AgentTrainer)
    trainer.tokenizer = TOK
    trainer.down_sampling = DownSamplingConfig(do_down_sampling=down_sampling, reject_equal_reward=True)
    metrics = {}
    kept = trainer._select(FakeBatch(["k0", "k1", "k2", "k3"]), metrics)
    assert kept.keys == ["k0", "k1", "k2"] and cleared == ["k3"] and not trainer.nothing_to_learn
    assert metrics["rollout/infra_errors"] == 1 and metrics["down_sampling/infra_error_dropped_num"] == 1
