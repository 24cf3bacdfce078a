"""`rstar2-agent train` on CPU: the config, the batching generator, the task order, and the whole recipe end to
end on the test-sized preset (a tiny model built in-process, a real code judge and reward pool), with resume."""

from __future__ import annotations

import asyncio
import json
import os
import types
import subprocess
import sys

import pytest
import torch

from rstar2_agent.engine.config import compose
from rstar2_agent.engine.generator import BatchingGenerator
from rstar2_agent.engine.tasks import load_tasks, step_indices
from rstar2_agent.engine.tiny import build_model, build_tokenizer

TOK = build_tokenizer()


# ------------------------------------------------------------------------------------------------- config

def test_default_config_keys_mirror_verl_and_overrides_apply():
    cfg = compose("cpu_trainer", ["actor_rollout_ref.rollout.n=4", "trainer.total_training_steps=3",
                                  "augmentation.down_sampling_config.down_sample_to_n=2"])
    assert cfg.actor_rollout_ref.rollout.n == 4 and cfg.trainer.total_training_steps == 3
    assert cfg.actor_rollout_ref.model.path == "default" and cfg.trainer.engine == "cpu"
    from rstar2_agent.down_sample import DownSamplingConfig

    ds = DownSamplingConfig.from_config(cfg)  # the GPU trainer's reader accepts the CPU block as it is
    assert ds.do_down_sampling and ds.down_sample_to_n == 2 and ds.reject_equal_reward


def test_tiny_preset_starts_from_the_default():
    cfg = compose("cpu_trainer_tiny")
    assert cfg.actor_rollout_ref.model.path == "tiny"
    assert cfg.algorithm.adv_estimator == "grpo"  # inherited from cpu_trainer


@pytest.mark.parametrize("override", ["trainer.no_such_key=1", "actor_rollout_ref.rollout.n=many"])
def test_bad_overrides_are_refused(override):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose("cpu_trainer", [override])


def test_cli_reports_a_bad_override_as_an_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rstar2_agent", "train", "trainer.no_such_key=1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode != 0 and "bad config override" in out.stderr and "no_such_key" in out.stderr


def test_gpu_config_is_handed_to_the_verl_entry_point(monkeypatch):
    from rstar2_agent import cli
    from rstar2_agent import main as gpu_main

    seen = {}
    monkeypatch.setattr(gpu_main, "main", lambda: seen.setdefault("argv", list(sys.argv)))
    cli.main(["train", "--config-name", "rstar2_agent_trainer", "--model", "/models/q", "--resume",
              "data.train_batch_size=8"])
    assert seen["argv"][1:] == ["--config-name", "rstar2_agent_trainer", "data.train_batch_size=8",
                                "actor_rollout_ref.model.path=/models/q", "trainer.resume_mode=auto"]


# -------------------------------------------------------------------------------------------------- tasks

def test_task_order_is_a_reproducible_walk_over_epochs():
    first_epoch = [i for step in range(1, 5) for i in step_indices(step, 5, 20, seed=3)]
    assert sorted(first_epoch) == list(range(20))  # every task exactly once per epoch
    assert step_indices(7, 5, 20, seed=3) == step_indices(7, 5, 20, seed=3)
    assert step_indices(5, 5, 20, seed=3) != step_indices(1, 5, 20, seed=3)  # a new epoch, a new order


def test_tasks_from_a_verl_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": [{"role": "user", "content": "What is 2+3?"}], "reward_model": {"ground_truth": "5"}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    (task,) = load_tasks(str(tmp_path / "t.parquet"), "train")
    assert (task.problem, task.answer) == ("What is 2+3?", "5")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "no answer"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl row 0"):
        load_tasks(str(tmp_path / "bad.jsonl"), "train")
    assert len(load_tasks("bundled", "test")) == 80
    holdout = {t.problem for t in load_tasks("bundled:holdout", "test")}  # the named split wins
    assert len(holdout) == 80 and not holdout & {t.problem for t in load_tasks("bundled", "test")}


# ---------------------------------------------------------------------------------------------- generator

async def test_concurrent_turns_are_decoded_together_and_match_single_decoding():
    model = build_model(TOK, seed=3)
    gen = BatchingGenerator(model, TOK, max_num_seqs=8)
    calls = []
    original = gen.generate_batch
    gen.generate_batch = lambda prompts, *rest: calls.append(len(prompts)) or original(prompts, *rest)
    prompts = [TOK.encode(f"<|im_start|>user\nWhat is {i} + {i}?<|im_end|>\n") for i in range(6)]
    greedy = {"temperature": 0.0, "max_tokens": 12}
    outs = await asyncio.gather(*(gen(str(i), p, greedy) for i, p in enumerate(prompts)))
    assert calls == [6]  # one batch for six concurrent turns
    for p, out in zip(prompts, outs):
        with torch.no_grad():
            alone = model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False,
                                   eos_token_id=TOK.eos_token_id, pad_token_id=TOK.pad_token_id)[0, len(p):].tolist()
        n = len(out.token_ids)
        assert 1 <= n <= 12 and out.token_ids == alone[:n]


async def test_second_turns_that_come_back_at_different_times_are_decoded_together():
    """The turns after a tool call come back staggered (the judge answers one call after another): the
    generator waits for the stragglers instead of sending the first one back alone."""
    gen = BatchingGenerator(build_model(TOK, seed=3), TOK, max_num_seqs=8, gather_window_s=0.3)
    calls = []
    original = gen.generate_batch
    gen.generate_batch = lambda prompts, *rest: calls.append(len(prompts)) or original(prompts, *rest)
    params = {"temperature": 0.0, "max_tokens": 4}

    async def trajectory(i: int):
        first = await gen(f"{i}", [1, 2, 3 + i], params)
        await asyncio.sleep(0.05 * i)  # a tool call that takes 0, 50, ..., 200 ms
        return await gen(f"{i}", [1, 2, 3 + i, *first.token_ids, 7], params)

    await asyncio.gather(*(trajectory(i) for i in range(5)))
    assert calls == [5, 5]
    # without the wait the first one back goes out alone
    gen.gather_window_s, calls[:] = 0.0, []
    await asyncio.gather(*(trajectory(i) for i in range(5)))
    assert calls[0] == 5 and calls[1] < 5 and sum(calls) == 10


class ScriptedLM(torch.nn.Module):
    """A causal LM that writes a fixed script per row, driven through the real decode loop. Its KV cache (a real
    DynamicCache) holds each row's index, so when the loop drops finished rows from the cache, the model still
    knows which row is which."""

    def __init__(self, scripts, vocab):
        super().__init__()
        self.scripts, self.vocab, self.batch_sizes = scripts, vocab, []

    def forward(self, input_ids, attention_mask, position_ids, past_key_values, use_cache=True, logits_to_keep=0):
        b, width = input_ids.shape
        if width > 1:  # prefill: remember where the new tokens start
            self.prefill, rows = width, torch.arange(b, dtype=torch.float32)
        else:
            rows = past_key_values.layers[0].keys[:, 0, 0, 0]
        step = (past_key_values.get_seq_length() - self.prefill + 1) if width == 1 else 0
        kv = rows.view(b, 1, 1, 1).expand(b, 1, width, 2).contiguous()
        past_key_values.update(kv, kv, 0)
        self.batch_sizes.append(b)
        logits = torch.full((b, 1, self.vocab), -1e9)
        for j, r in enumerate(rows.long().tolist()):
            script = self.scripts[r]
            logits[j, 0, script[min(step, len(script) - 1)]] = 0.0
        return types.SimpleNamespace(logits=logits)


def test_a_turn_ends_at_the_stop_string_eos_or_max_tokens_and_finished_rows_leave_the_batch():
    call = TOK.encode('ok <tool_call>\n{"a": 1}\n</tool_call>', add_special_tokens=False)
    scripts = [call + TOK.encode(" more text", add_special_tokens=False),  # stops right after </tool_call>
               TOK.encode("The answer", add_special_tokens=False) + [TOK.eos_token_id, 5, 6],  # EOS kept
               TOK.encode("a b c d e f g h i j k l m n o p", add_special_tokens=False)]  # runs to max_tokens
    model = ScriptedLM(scripts, len(TOK))
    gen = BatchingGenerator(model, TOK)
    rows = gen.generate_batch([[1, 2], [3], [4, 5, 6]], {"temperature": 0.0}, [64, 64, 7])
    assert rows[0] == call
    assert rows[1] == TOK.encode("The answer", add_special_tokens=False) + [TOK.eos_token_id]
    assert rows[2] == scripts[2][:7]
    assert model.batch_sizes[0] == 3 and model.batch_sizes[-1] == 1  # the long row goes on alone
    assert gen.generated_tokens == sum(len(r) for r in rows)


def test_torch_threads_default_to_a_few_more_than_the_usable_cores():
    from rstar2_agent.engine.trainer import set_threads, usable_cores

    before = torch.get_num_threads()
    try:
        assert set_threads(0) == usable_cores() + 2 == torch.get_num_threads()
        assert set_threads(1) == 1 == torch.get_num_threads()  # trainer.threads wins when set
    finally:
        torch.set_num_threads(before)


async def test_a_failing_generate_reaches_every_waiting_turn():
    gen = BatchingGenerator(build_model(TOK), TOK)

    def broken(*args):
        raise RuntimeError("out of memory")

    gen.generate_batch = broken
    results = await asyncio.gather(*(gen(str(i), [1, 2, 3], {"max_tokens": 4}) for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "out of memory" in str(r) for r in results)


# ----------------------------------------------------------------------------------------------- end to end

def _train(run_dir, *args):
    cmd = [sys.executable, "-m", "rstar2_agent", "train", "--config-name", "cpu_trainer_tiny",
           f"trainer.default_local_dir={run_dir}", "trainer.logger=[console,jsonl]", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_tiny_preset_runs_the_whole_recipe_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    out = _train(run_dir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    cold = next(r for r in records if "cold_start/loss" in r)
    assert cold["cold_start/loss"] < cold["cold_start/first_loss"] / 5  # the format was learned
    steps = [r for r in records if "train/reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["train/traces"] == 2 * 4  # train_batch_size x rollout.n
        assert 0 <= r["train/kept_traces"] <= 2 * 2  # RoC keeps at most down_sample_to_n per group
        assert r["timing/step_s"] > 0 and r["perf/tokens_per_s"] > 0
    # after the cold start the tiny model calls the real tool, through the judge
    assert sum(r["train/tool_calls_per_traj"] for r in steps) > 0
    vals = [r for r in records if "val/accuracy" in r]
    assert [r["step"] for r in vals] == [0, 1, 2] and all(r["val/size"] == 4 for r in vals)
    assert "step 2/2 | reward" in out.stdout and "validation @ step 2" in out.stdout
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert (run_dir / "global_step_2" / "config.json").exists()

    again = _train(run_dir)  # refuses to overwrite a run
    assert again.returncode != 0 and "--resume" in again.stderr

    resumed = _train(run_dir, "trainer.total_training_steps=3", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from step 2" in resumed.stdout and "cold start:" not in resumed.stdout
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/reward_mean" in r] == [1, 2, 3]
    assert (run_dir / "latest_checkpointed_iteration.txt").read_text() == "3"


def test_sigterm_stops_the_private_judge_and_keeps_the_checkpoint(tmp_path):
    import psutil

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "rstar2_agent", "train", "--config-name", "cpu_trainer_tiny",
           f"trainer.default_local_dir={run_dir}", "trainer.logger=[console,jsonl]", "trainer.total_training_steps=50"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:  # wait for the first checkpoint (after the cold start)
            if line.startswith("checkpoint:"):
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("redis-server" in " ".join(c.cmdline()) for c in children)
        proc.terminate()
        assert proc.wait(60) == 128 + 15
    finally:
        proc.kill()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
    assert (run_dir / "latest_checkpointed_iteration.txt").read_text() == "0"


def test_metrics_go_to_jsonl_and_to_an_offline_wandb_run(tmp_path, monkeypatch):
    from rstar2_agent.engine.metrics import MetricsLog, plot_metrics, read_metrics

    monkeypatch.delenv("WANDB_MODE", raising=False)
    lines = []
    log = MetricsLog(tmp_path, ["console", "jsonl", "wandb"], "p", "e", {"a": 1}, echo=lines.append)
    log.log(0, {"val/accuracy": 0.25})
    log.log(1, {"train/reward_mean": 0.5, "val/accuracy": 0.5})
    log.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 0, "val/accuracy": 0.25},
                                                         {"step": 1, "train/reward_mean": 0.5, "val/accuracy": 0.5}]
    assert any(line.startswith("wandb (offline)") for line in lines)
    assert list((tmp_path / "wandb").glob("offline-run-*"))  # nothing was sent anywhere
    second = MetricsLog(tmp_path / "second", ["wandb"], "p", "e2", {}, echo=lines.append)
    second.log(0, {"val/accuracy": 0.5})
    second.close()
    assert list((tmp_path / "second" / "wandb").glob("offline-run-*"))  # a later run in the process: its own dir
    assert plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="nope.*known.*mlflow"):
        MetricsLog(tmp_path, ["nope"], "p", "e", {})


def test_other_verl_backends_go_through_verls_tracking_into_the_run_directory(tmp_path, monkeypatch):
    from rstar2_agent.engine.metrics import MetricsLog

    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    log = MetricsLog(tmp_path, ["file"], "p", "e", {"a": 1}, echo=lambda line: None)
    log.log(2, {"train/reward_mean": 0.5})
    log.close()
    assert [json.loads(line) for line in (tmp_path / "verl_metrics.jsonl").read_text().splitlines()] == \
        [{"step": 2, "data": {"train/reward_mean": 0.5}}]  # verl's own file format
    assert "VERL_FILE_LOGGER_PATH" not in os.environ and not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("module", ["rstar2_agent.engine.generator", "rstar2_agent.engine.metrics",
                                    "rstar2_agent.engine.tasks", "rstar2_agent.engine.run",
                                    "rstar2_agent.data.math_tasks"])
def test_doctests(module):
    import doctest
    import importlib

    failed, attempted = doctest.testmod(importlib.import_module(module))
    assert attempted > 0 and failed == 0


def test_training_threads_are_one_per_core_and_restored():
    """Forward+backward passes run at one torch thread per usable core (more threads than cores make MKL's
    backward GEMMs wait on each other), generation keeps its own setting, and an explicit count wins."""
    import torch

    from rstar2_agent.cores import usable_cores
    from rstar2_agent.engine.trainer import set_threads, training_threads

    generation = set_threads(0)
    assert generation == usable_cores() + 2
    with training_threads(0) as n:
        assert n == usable_cores() == torch.get_num_threads()
    assert torch.get_num_threads() == generation
    with training_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == generation
