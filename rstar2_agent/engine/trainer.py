"""The CPU engine's training loop: the whole GRPO-RoC recipe in one process, on the GPU path's own parts.

One step (`train_step`), for `data.train_batch_size` prompts and `actor_rollout_ref.rollout.n` samples each:

    rollout   AgentLoop (rstar2_agent.rollout) x BatchingGenerator or, where vLLM runs, VLLMGenerator (see
              engine/backend.py), tools on the code judge
    reward    RewardPool (rstar2_agent.reward) on the model-written text (decode_model_text, as the verl manager)
    RoC       rows_to_keep (rstar2_agent.trainer.selection, what the verl trainer calls): reject equal-reward
              groups, keep negatives, keep the cleanest positives, down to `down_sample_to_n` per group
    update    verl's GRPO advantage and policy loss (rstar2_agent.engine.update), on the kept traces: one
              on-policy step per rollout, so the clip is inactive (REINFORCE with group-normalised advantages)

The engine differs from the GPU path (transformers generation and an in-process optimizer step instead of
SGLang + FSDP; verl's own trainer does not run on CPU, see ../shared/reference/verl-0.9.1-on-cpu.md), and so
does that single update step; README.md ("The engine", under Training on CPU) lists what else differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from rstar2_agent.cores import usable_cores
from rstar2_agent.data.math_tasks import FAMILIES
from rstar2_agent.engine import backend, checkpoint
from rstar2_agent.engine.cold_start import TeacherGenerator, demonstration_turns, sft_step
from rstar2_agent.engine.metrics import MetricsLog, format_duration, plot_metrics, step_summary, val_summary
from rstar2_agent.engine.tasks import Task, load_tasks, step_indices
from rstar2_agent.engine.update import Rollout, collate, grpo_advantages, policy_step
from rstar2_agent.rollout import AgentLoop, LoopConfig, ToolTurnFormat, Trajectory, load_chat_template, prompt_ids


def set_threads(threads: int) -> int:
    """Torch threads for generation: `threads`, or by default two more than the cores this process may use; one
    inter-op thread.

    One thread per core is fastest on an idle machine but collapses as soon as another process takes a core:
    every matmul is split evenly and waits for the share whose thread was descheduled. A few more threads than
    cores let the OS balance the load. On 2 cores, SmolLM2-135M decoding 32 rows (benchmarks/cpu_generation.py):
    2 threads 75 tokens/s alone, 27 beside one busy process; 4 threads 64 alone, 51 beside it."""
    n = threads if threads > 0 else usable_cores() + 2
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel region
        torch.set_num_interop_threads(1)
    return n


@contextlib.contextmanager
def training_threads(threads: int) -> Iterator[int]:
    """Torch threads for a forward+backward pass: `threads`, or by default one per usable core; restored after.

    Not the generation setting: in the backward pass MKL's large GEMMs (the LM head, 49152 x 576 for SmolLM2)
    run an OpenMP region whose threads wait for each other, and with more threads than cores most of the time
    goes to that waiting. Measured on 2 cores, one policy step on 4 sequences of 600 tokens: 21.5 s with 2
    threads, over 400 s with 4."""
    before = torch.get_num_threads()
    n = threads if threads > 0 else usable_cores()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


@dataclasses.dataclass
class Scored:
    """One trajectory with its task, group and reward."""

    task: Task
    uid: str
    trajectory: Trajectory
    reward: float = 0.0


def trajectory_metrics(prefix: str, items: Sequence[Scored]) -> dict[str, float]:
    """Reward and tool numbers of the trajectories the sandbox did not fail (`Trajectory.infra_error`), plus
    `{prefix}/infra_errors`, the number it failed."""
    infra = sum(s.trajectory.infra_error for s in items)
    items = [s for s in items if not s.trajectory.infra_error]
    if not items:  # the sandbox failed every one: nothing to measure
        names = ("reward_mean", "accuracy", "tool_calls_per_traj", "tool_error_ratio", "response_length", "traces")
        return {**{f"{prefix}/{name}": 0.0 for name in names}, f"{prefix}/infra_errors": float(infra)}
    calls = sum(s.trajectory.stats.tool_calls for s in items)
    errors = sum(s.trajectory.stats.tool_errors + s.trajectory.stats.parse_errors for s in items)
    attempts = calls + sum(s.trajectory.stats.parse_errors for s in items)
    return {
        f"{prefix}/reward_mean": float(np.mean([s.reward for s in items])),
        f"{prefix}/accuracy": float(np.mean([s.reward >= 1.0 for s in items])),
        f"{prefix}/tool_calls_per_traj": calls / len(items),
        f"{prefix}/tool_error_ratio": errors / attempts if attempts else 0.0,
        f"{prefix}/response_length": float(np.mean([len(s.trajectory.response_ids) for s in items])),
        f"{prefix}/traces": float(len(items)),
        f"{prefix}/infra_errors": float(infra),
    }


class CPUTrainer:
    def __init__(self, cfg, resume: bool = False, echo: Callable[[str], None] = print):
        self.cfg = cfg
        self.echo = echo
        self.run_dir = Path(cfg.trainer.default_local_dir).expanduser()
        latest = checkpoint.latest_step(self.run_dir)
        self.resume_from = latest if resume else None
        if resume and latest is None:
            echo(f"--resume: no checkpoint in {self.run_dir}, starting from scratch")
        if not resume and latest is not None:
            raise SystemExit(f"{self.run_dir} already holds a run: pass --resume to continue it, or set "
                             f"trainer.default_local_dir to a new folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.threads = set_threads(cfg.trainer.threads)
        self.progress = cfg.trainer.progress

    # ----------------------------------------------------------------------------------------------- setup

    def _model_path(self) -> str:
        if self.resume_from is not None:
            return str(self.run_dir / f"global_step_{self.resume_from}")
        path = self.cfg.actor_rollout_ref.model.path
        if path == "default":
            from rstar2_agent.engine.models import prepare_default_model

            return prepare_default_model(log=self.echo)
        return path

    def _load_model(self):
        path = self._model_path()
        torch.manual_seed(self.cfg.trainer.seed)
        if path == "tiny":
            from rstar2_agent.engine.tiny import build_model, build_tokenizer

            tokenizer = build_tokenizer()
            self.model_dir = None
            return build_model(tokenizer, seed=self.cfg.trainer.seed), tokenizer, "tiny (built in-process)"
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(path).expanduser().is_dir():
            raise SystemExit(f"model path {path!r} is not a folder: give a local Hugging Face model folder "
                             f"(hub downloads are not used), `default` or `tiny`")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model_dir = path  # a model folder, which a vLLM generator loads
        return model, tokenizer, path

    def _prompt_ids(self, task: Task) -> list[int]:
        system = self.cfg.data.system_prompt
        tools = None if system else [tool.schema for tool in self.tools.values()]
        return prompt_ids(self.tokenizer, self.template, task.problem, system, tools)

    def _tasks(self, spec: str, split: str, limit: int = 0) -> list[tuple[Task, list[int]]]:
        tasks = load_tasks(spec, split)[: limit if limit > 0 else None]
        out = [(t, self._prompt_ids(t)) for t in tasks]
        kept = [(t, ids) for t, ids in out if len(ids) <= self.cfg.data.max_prompt_length]
        if len(kept) < len(out):
            self.echo(f"{split}: skipped {len(out) - len(kept)} of {len(out)} problems whose prompt is longer "
                      f"than data.max_prompt_length={self.cfg.data.max_prompt_length}")
        if not kept:
            raise SystemExit(f"no {split} problem fits data.max_prompt_length={self.cfg.data.max_prompt_length}")
        return kept

    def _setup(self, client) -> None:
        from rstar2_agent.down_sample import DownSamplingConfig
        from rstar2_agent.reward import RewardPool
        from rstar2_agent.tools import PythonTool

        cfg = self.cfg
        self.model, self.tokenizer, model_name = self._load_model()
        self.template = load_chat_template(cfg.actor_rollout_ref.model.custom_chat_template)
        tool = PythonTool(client)
        self.tools = {tool.name: tool}
        mt = cfg.actor_rollout_ref.rollout.multi_turn
        loop_cfg = LoopConfig(response_length=cfg.data.max_response_length,
                              max_assistant_turns=mt.max_assistant_turns, max_parallel_calls=mt.max_parallel_calls,
                              max_tool_response_length=mt.max_tool_response_length,
                              tool_response_truncate_side=mt.tool_response_truncate_side)
        self.agent = AgentLoop(self.tokenizer, self.tools, loop_cfg, ToolTurnFormat(self.tokenizer, self.template))
        self.generator = backend.build_generator(cfg, self.model, self.tokenizer, self.model_dir, self.echo)
        actor = cfg.actor_rollout_ref.actor
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=actor.optim.lr,
                                           weight_decay=actor.optim.weight_decay)
        self.down_sampling = DownSamplingConfig.from_config(cfg)
        self.reward_pool = RewardPool(num_workers=cfg.reward.pool_workers, timeout_s=cfg.reward.timeout_s)
        self.train_tasks = self._tasks(cfg.data.train_files, "train")
        self.val_tasks = self._tasks(cfg.data.val_files, "test", cfg.data.val_size)
        params = sum(p.numel() for p in self.model.parameters())
        self.echo(f"model {model_name} ({params / 1e6:.1f}M parameters), {self.threads} torch threads, "
                  f"{len(self.train_tasks)} train / {len(self.val_tasks)} validation problems, run dir {self.run_dir}")

    # ------------------------------------------------------------------------------------------ the phases

    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        live = sys.stderr.isatty()  # in a log file, a bar line every 30 s instead of a redraw per item
        return tqdm(total=total, desc=f"{desc:>10}", disable=not self.progress, leave=False, dynamic_ncols=True,
                    mininterval=0.1 if live else 30.0)

    async def _rollout(self, tasks: Sequence[tuple[Task, list[int]]], n: int, temperature: float, tag: str,
                       generate=None, desc: str = "rollout") -> list[Scored]:
        rollout = self.cfg.actor_rollout_ref.rollout
        params = {"temperature": temperature, "top_p": rollout.top_p}
        bar = self._bar(len(tasks) * n, desc)

        async def one(i: int, k: int) -> Scored:
            task, ids = tasks[i]
            traj = await self.agent.run(ids, generate or self.generator, params, request_id=f"{tag}-{i}-{k}")
            bar.update(1)
            return Scored(task, f"{tag}-{i}", traj)

        try:
            return list(await asyncio.gather(*(one(i, k) for i in range(len(tasks)) for k in range(n))))
        finally:
            bar.close()

    def _score(self, items: list[Scored]) -> None:
        from rstar2_agent.reward.verl_manager import decode_model_text

        items = [s for s in items if not s.trajectory.infra_error]  # not the model's doing: never scored
        bar = self._bar(len(items), "reward")
        futures = []
        for s in items:
            ids = torch.tensor(s.trajectory.response_ids, dtype=torch.long)
            text = decode_model_text(self.tokenizer, ids, torch.tensor(s.trajectory.response_mask))
            future = self.reward_pool.submit(text, s.task.answer)
            future.add_done_callback(lambda _: bar.update(1))
            futures.append(future)
        try:
            for s, future in zip(items, futures):
                s.reward = float(future.result())
        finally:
            bar.close()

    def _rollouts(self, items: Sequence[Scored]) -> list[Rollout]:
        return [Rollout(s.trajectory.prompt_ids, s.trajectory.response_ids, s.trajectory.response_mask, s.reward,
                        s.uid) for s in items]

    def _keep(self, items: list[Scored]) -> tuple[list[Scored], dict[str, float]]:
        """GRPO-RoC's choice of traces, by the very function the verl trainer calls."""
        from rstar2_agent.trainer.selection import rows_to_keep

        if not self.down_sampling.do_down_sampling:  # the sandbox's failures are left out even so
            return [s for s in items if not s.trajectory.infra_error], {}
        kept, metrics = rows_to_keep([s.uid for s in items], [s.trajectory.response_ids for s in items],
                                     [s.reward for s in items], self.tokenizer, self.down_sampling,
                                     [s.trajectory.infra_error for s in items])
        return ([] if kept is None else [items[i] for i in kept]), metrics

    def _update(self, kept: list[Scored]) -> dict[str, float]:
        actor = self.cfg.actor_rollout_ref.actor
        batch = collate(self._rollouts(kept), self.tokenizer.pad_token_id)
        advantages = grpo_advantages(batch, self.cfg.algorithm.norm_adv_by_std_in_grpo)
        bar = self._bar(len(kept), "update")
        try:
            with training_threads(self.cfg.trainer.threads):
                stats = policy_step(self.model, self.optimizer, batch, advantages, None,
                                    clip_low=actor.clip_ratio_low, clip_high=actor.clip_ratio_high,
                                    max_grad_norm=actor.grad_clip, micro_batch_size=actor.ppo_micro_batch_size_per_gpu,
                                    progress=bar.update, temperature=self.cfg.actor_rollout_ref.rollout.temperature)
        finally:
            bar.close()
        start = time.perf_counter()
        if backend.sync_weights(self.generator, self.model):  # a vLLM generator holds its own copy
            stats["weight_sync_s"] = time.perf_counter() - start
        return {f"actor/{k}": v for k, v in stats.items()}

    def _batch_tasks(self, step: int) -> list[tuple[Task, list[int]]]:
        data = self.cfg.data
        return [self.train_tasks[i] for i in step_indices(step, data.train_batch_size, len(self.train_tasks),
                                                          self.cfg.trainer.seed, data.shuffle)]

    async def train_step(self, step: int) -> dict[str, float]:
        rollout = self.cfg.actor_rollout_ref.rollout
        start = time.perf_counter()
        tokens_before = self.generator.generated_tokens
        items = await self._rollout(self._batch_tasks(step), rollout.n, rollout.temperature, f"s{step}")
        rollout_s = time.perf_counter() - start
        self._score(items)
        reward_s = time.perf_counter() - start - rollout_s
        kept, metrics = self._keep(items)
        metrics.update(trajectory_metrics("train", items))
        metrics["rollout/infra_errors"] = metrics.pop("train/infra_errors")  # the verl trainer's name
        metrics["train/kept_traces"] = float(len(kept))
        if kept:
            metrics.update(self._update(kept))
        metrics["actor/update_skipped"] = float(not kept)  # every group had equal rewards: nothing to learn
        total = time.perf_counter() - start
        metrics.update({"timing/rollout_s": rollout_s, "timing/reward_s": reward_s,
                        "timing/update_s": total - rollout_s - reward_s, "timing/step_s": total,
                        "perf/tokens_per_s": (self.generator.generated_tokens - tokens_before) / max(rollout_s, 1e-9)})
        return metrics

    async def validate(self) -> dict[str, float]:
        val = self.cfg.actor_rollout_ref.rollout.val_kwargs
        rng_state = torch.get_rng_state()
        torch.manual_seed(self.cfg.trainer.seed)  # the same dice for every validation
        try:
            items = await self._rollout(self.val_tasks, val.n, val.temperature, "val", desc="validate")
        finally:
            torch.set_rng_state(rng_state)  # training samples go on as if validation had not happened
        self._score(items)
        metrics = trajectory_metrics("val", items)
        metrics["val/size"] = float(len(self.val_tasks))
        items = [s for s in items if not s.trajectory.infra_error]
        for family in sorted({s.task.family for s in items if s.task.family}):
            metrics[f"val/accuracy/{family}"] = float(np.mean([s.reward >= 1.0 for s in items
                                                               if s.task.family == family]))
        return metrics

    async def cold_start(self) -> dict[str, float]:
        """SFT on demonstrations of the bundled train problems (see cold_start.py)."""
        cs = self.cfg.cold_start
        families = set(cs.families) if cs.families else set(FAMILIES)
        unknown = sorted(families - set(FAMILIES))
        if unknown:
            raise SystemExit(f"cold_start.families: unknown {unknown}; known: {sorted(FAMILIES)}")
        tasks = [(t, ids) for t, ids in self._tasks("bundled", "train") if t.family in families][: cs.examples]
        teacher = TeacherGenerator(self.tokenizer, {f"demo-{i}-0": demonstration_turns(t)
                                                    for i, (t, _) in enumerate(tasks)})
        demos = await self._rollout(tasks, 1, 1.0, "demo", generate=teacher, desc="demos")
        broken = [d for d in demos if d.trajectory.stats.tool_errors or d.trajectory.stats.finish_reason != "stop"]
        if broken:
            raise RuntimeError(f"{len(broken)} cold-start demonstrations did not run cleanly (first: "
                               f"{self.tokenizer.decode(broken[0].trajectory.response_ids)!r}); is the code "
                               f"judge healthy and data.max_response_length large enough?")
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = cs.lr
        rng = random.Random(self.cfg.trainer.seed)
        bar = self._bar(cs.steps, "cold start")
        stats: dict[str, float] = {}
        first_loss = None
        try:
            with training_threads(self.cfg.trainer.threads):
                for _ in range(cs.steps):
                    batch = collate(self._rollouts(rng.sample(demos, min(cs.batch_size, len(demos)))),
                                    self.tokenizer.pad_token_id)
                    stats = sft_step(self.model, self.optimizer, batch, self.cfg.actor_rollout_ref.actor.grad_clip,
                                     self.cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu)
                    first_loss = stats["cold_start/loss"] if first_loss is None else first_loss
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['cold_start/loss']:.3f}")
        finally:
            bar.close()
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = self.cfg.actor_rollout_ref.actor.optim.lr
        self.optimizer.state.clear()  # RL starts with fresh Adam moments
        backend.sync_weights(self.generator, self.model)
        return {**stats, "cold_start/first_loss": first_loss}

    # --------------------------------------------------------------------------------------------- the run

    def _save(self, step: int) -> None:
        path = checkpoint.save(self.run_dir, step, self.model, self.tokenizer, self.optimizer,
                               keep=self.cfg.trainer.max_actor_ckpt_to_keep)
        self.echo(f"checkpoint: {path}")

    async def _fit(self, judge_url: str) -> dict[str, float]:
        from code_judge.client import CodeJudgeClient
        from omegaconf import OmegaConf

        cfg, tr = self.cfg, self.cfg.trainer
        async with CodeJudgeClient(judge_url) as client:
            self._setup(client)
            log = MetricsLog(self.run_dir, list(tr.logger), tr.project_name, tr.experiment_name,
                             OmegaConf.to_container(cfg, resolve=True), echo=self.echo)
            last: dict[str, float] = {}
            try:
                first = 1
                if self.resume_from is not None:
                    checkpoint.restore_training_state(self.run_dir / f"global_step_{self.resume_from}",
                                                      self.optimizer)
                    first = self.resume_from + 1
                    self.echo(f"resumed from step {self.resume_from}")
                else:
                    if cfg.cold_start.steps > 0:
                        start = time.perf_counter()
                        stats = await self.cold_start()
                        log.log(0, stats)
                        log.say(f"cold start: {cfg.cold_start.steps} SFT steps on {cfg.cold_start.examples} "
                                f"demonstrations, loss {stats['cold_start/first_loss']:.3f} -> "
                                f"{stats['cold_start/loss']:.3f}, "
                                f"{format_duration(time.perf_counter() - start)}")
                    if tr.val_before_train:
                        last = await self.validate()
                        log.log(0, last)
                        log.say(val_summary(0, last))
                    self._save(0)
                total = tr.total_training_steps
                for step in range(first, total + 1):
                    metrics = await self.train_step(step)
                    is_last = step == total
                    if is_last or (tr.test_freq > 0 and step % tr.test_freq == 0):
                        val = await self.validate()
                        metrics.update(val)
                        last = val
                    log.log(step, metrics)
                    log.say(step_summary(step, total, metrics))
                    if "val/accuracy" in metrics:
                        log.say(val_summary(step, metrics))
                    if is_last or (tr.save_freq > 0 and step % tr.save_freq == 0):
                        self._save(step)
            finally:
                log.close()
                self.reward_pool.close()
                backend.close(getattr(self, "generator", None))
        if log.jsonl and log.path.exists():
            png = plot_metrics(log.path, self.run_dir / "curves.png", f"{tr.project_name} / {tr.experiment_name}")
            self.echo(f"metrics: {log.path}\nplot: {png}")
        return last

    def fit(self) -> dict[str, float]:
        """Run (or resume) the whole job; returns the last validation metrics."""
        from code_judge.local import LocalJudge

        url = self.cfg.code_judge.url
        judge: Optional[LocalJudge] = None
        if url is None:
            self.echo(f"starting a private code judge ({self.cfg.code_judge.workers} workers, Redis on 127.0.0.1)")
            judge = LocalJudge(workers=self.cfg.code_judge.workers).start()
            url = judge.url
        try:
            return asyncio.run(self._fit(url))
        finally:
            if judge is not None:
                judge.stop()
