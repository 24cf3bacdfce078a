"""Seconds per GRPO step on this CPU: verl 0.9.1's own trainer (hf_cpu rollout) against the in-process engine.

`--rollout vllm_cpu` gives verl our vLLM CPU replica instead, and the engine generates with vLLM too (it does
wherever vLLM is installed; with hf_cpu the engine is forced to its transformers loop, so both sides generate
alike). Results go to benchmarks/results/verl_cpu_vs_engine.{json,txt}, or verl_cpu_vs_engine_vllm.* with vLLM.

The issue asks for it: "Measure verl-on-CPU against the in-process engine on the default preset (seconds per
step ...)". One workload for both, the engine's default preset (rstar2_agent/engine/config.py): SmolLM2-135M,
8 prompts x 8 samples per step at temperature 0.8, responses up to 256 tokens, 3
assistant turns, tool responses up to 256 tokens, GRPO-RoC down to 4 per group, one optimizer step per step,
the bundled math tasks. Neither run has a cold start (verl has none), the engine skips validation before
training and validates one problem at the end (after its last step's timer). The prompts differ by the
system prompt: the engine's is short (DEFAULT_SYSTEM_PROMPT), verl's chat template carries the tool schema
(about 450 tokens in all), so verl gets max_prompt_length=640 where the engine has 512.

1. engine: `rstar2-agent train trainer.total_training_steps=N cold_start.steps=0 ...`; seconds per step are
   `timing/step_s` from its metrics.jsonl.
2. verl:   `python3 -m rstar2_agent.main --config-name rstar2_agent_trainer_cpu ...` with the same settings,
   data from `python3 -m rstar2_agent.verl_cpu.data`, the tool's code judge started as the preset says
   (`python3 -m code_judge up --max-workers 1`, on a private port); seconds per step are verl's
   `timing_s/step` from its `step:N - ...` console lines.

Step 1 of each includes warm-up, so the mean is over steps 2..N. Results go to
benchmarks/results/verl_cpu_vs_engine.{json,txt}, rewritten after each run (a run cut by `--deadline` keeps the
steps it finished).

    flock /tmp/bench.lock timeout 2400 python3 benchmarks/verl_cpu_vs_engine.py > /tmp/verl_vs_engine.log 2>&1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STEP_LINE = re.compile(r"step:(\d+) - .*?timing_s/step:([0-9.eE+-]+)")

# The engine's default preset, as overrides of each side (the verl keys mean the same things).
ENGINE_OVERRIDES = ["cold_start.steps=0", "trainer.val_before_train=False", "trainer.test_freq=0",
                    "trainer.save_freq=0", "data.val_size=1", "trainer.logger=[console,jsonl]",
                    "trainer.progress=False"]
ROC = {"do_down_sampling": True, "down_sampling_config.down_sample_to_n": 4,
       "down_sampling_config.reject_equal_reward": True, "down_sampling_config.roc_error_ratio": True,
       "down_sampling_config.roc_answer_format": True, "down_sampling_config.min_zero_reward_trace_num": 1,
       "down_sampling_config.min_non_zero_reward_trace_num": 1}
VERL_OVERRIDES = [
    "cpu_model=default", "data.train_batch_size=8", "data.max_prompt_length=640", "data.max_response_length=256",
    "actor_rollout_ref.rollout.n=8", "actor_rollout_ref.rollout.temperature=0.8", "actor_rollout_ref.rollout.top_p=1.0",
    "actor_rollout_ref.rollout.max_model_len=896", "actor_rollout_ref.rollout.max_num_seqs=32",
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3",
    "actor_rollout_ref.rollout.multi_turn.max_tool_response_length=256",
    # one optimizer step per step on the kept 8 x 4 traces, micro-batches of 4 as the engine
    "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.actor.optim.lr=1e-5", "actor_rollout_ref.actor.clip_ratio_low=0.2",
    "actor_rollout_ref.actor.clip_ratio_high=0.28",
    *[f"augmentation.{k}={v}" for k, v in ROC.items()],
]


# verl's rollout replica -> the engine's generator (`actor_rollout_ref.rollout.name`) that generates alike
ENGINE_BACKEND = {"hf_cpu": "hf", "vllm_cpu": "vllm"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_logged(cmd: list[str], log_path: Path, cwd: Path, env: dict, budget_s: float) -> tuple[int, float]:
    """Run cmd (its own process group) with output to log_path; stop it after budget_s. (rc, seconds)."""
    print("$ " + " ".join(cmd), flush=True)
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(cwd), env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, budget_s))
        except subprocess.TimeoutExpired:
            print(f"  budget of {budget_s:.0f} s spent: stopping it", flush=True)
            os.killpg(proc.pid, signal.SIGINT)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
    return rc, time.time() - start


def engine_steps(run_dir: Path) -> list[float]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["timing/step_s"] for r in sorted(rows, key=lambda r: r["step"]) if "timing/step_s" in r]


def verl_steps(log_path: Path) -> list[float]:
    found = {}
    for line in log_path.read_text(errors="replace").splitlines():
        m = STEP_LINE.search(line)
        if m:
            found[int(m.group(1))] = float(m.group(2))
    return [found[k] for k in sorted(found)]


def run_engine(work: Path, steps: int, budget_s: float, rollout: str = "hf_cpu",
               overrides: tuple[str, ...] = ()) -> dict:
    """`rstar2-agent train` on ENGINE_OVERRIDES, then `overrides` (later values win), in work/engine."""
    run_dir = work / "engine"
    backend = ENGINE_BACKEND[rollout]
    cmd = [sys.executable, "-c", "from rstar2_agent.cli import main; main()", "train", f"trainer.total_training_steps={steps}",
           f"trainer.default_local_dir={run_dir}", *ENGINE_OVERRIDES, f"actor_rollout_ref.rollout.name={backend}",
           *overrides]
    rc, wall = run_logged(cmd, work / "engine.log", work, dict(os.environ), budget_s)
    return {"command": " ".join(cmd), "rc": rc, "wall_s": wall, "step_s": engine_steps(run_dir),
            "log": str(work / "engine.log")}


def run_verl(work: Path, steps: int, budget_s: float, rollout: str = "hf_cpu", val_split: str = "test",
             overrides: tuple[str, ...] = (), data_args: tuple[str, ...] = ()) -> dict:
    """verl's trainer on VERL_OVERRIDES, then `overrides` (a key given twice takes its later value), with a
    private code judge, validating on the bundled `val_split` of the parquet that `python3 -m
    rstar2_agent.verl_cpu.data *data_args` writes; its log is work/verl.log."""
    start = time.time()
    data = work / "data"
    subprocess.run([sys.executable, "-m", "rstar2_agent.verl_cpu.data", "--out", str(data), *data_args], check=True)
    port = free_port()
    tool_cfg = (ROOT / "rstar2_agent" / "config" / "tool_config" / "python_tool_config.yaml").read_text()
    tool_path = work / "python_tool_config.yaml"
    tool_path.write_text(tool_cfg.replace("host_port: 8088", f"host_port: {port}"))
    judge = subprocess.Popen([sys.executable, "-m", "code_judge", "up", "--port", str(port), "--max-workers", "1"],
                             stdout=open(work / "judge.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(5)
        cmd = [sys.executable, "-m", "rstar2_agent.main", "--config-name", "rstar2_agent_trainer_cpu",
               *VERL_OVERRIDES, f"data.train_files={data / 'train.parquet'}", f"data.val_files={data / f'{val_split}.parquet'}",
               f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tool_path}",
               f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={work / 'verl_ckpt'}",
               f"actor_rollout_ref.rollout.name={rollout}", *overrides]
        env = dict(os.environ, RSTAR2_CPU_ROLLOUT_MAX_BATCH="32")  # the engine's max_num_seqs
        rc, wall = run_logged(cmd, work / "verl.log", work, env, budget_s - (time.time() - start))
    finally:
        os.killpg(judge.pid, signal.SIGTERM)
        try:
            judge.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(judge.pid, signal.SIGKILL)
    return {"command": " ".join(cmd), "rc": rc, "wall_s": wall, "step_s": verl_steps(work / "verl.log"),
            "log": str(work / "verl.log")}


def mean_after_first(values: list[float]) -> float | None:
    rest = values[1:]
    return sum(rest) / len(rest) if rest else None


def table(results: dict, steps: int) -> tuple[str, dict, float | None]:
    """The printed table, the means over steps 2..N, and verl's mean over the engine's."""
    names = [n for n in ("engine", "verl") if n in results]
    lines = ["seconds per GRPO step (step 1 includes warm-up; mean over steps 2..N)",
             f"{'step':>6}" + "".join(f"{n:>12}" for n in names)]
    for i in range(steps):
        cells = []
        for n in names:
            s = results[n]["step_s"]
            cells.append(f"{s[i]:>12.1f}" if i < len(s) else f"{'-':>12}")
        lines.append(f"{i + 1:>6}" + "".join(cells))
    means = {n: mean_after_first(results[n]["step_s"]) for n in names}
    lines.append(f"{'mean':>6}" + "".join(f"{means[n]:>12.1f}" if means[n] else f"{'-':>12}" for n in names))
    ratio = (means["verl"] / means["engine"]) if means.get("verl") and means.get("engine") else None
    lines.append(f"verl-on-CPU vs engine, seconds per step: {ratio:.2f}" if ratio else
                 "verl-on-CPU vs engine, seconds per step: n/a (a run did not finish two steps)")
    return "\n".join(lines), means, ratio


def save(results: dict, steps: int, rollout: str = "hf_cpu") -> str:
    text, means, ratio = table(results, steps)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "verl_cpu_vs_engine" + ("_vllm" if rollout == "vllm_cpu" else "")
    text = f"rollout: verl {rollout}, engine {ENGINE_BACKEND[rollout]}\n{text}"
    (RESULTS / f"{name}.txt").write_text(text + "\n")
    payload = {"steps": steps, "mean_over": "steps 2..N", "mean_step_s": means, "ratio_verl_over_engine": ratio,
               "rollout": rollout, "engine_overrides": ENGINE_OVERRIDES, "verl_overrides": VERL_OVERRIDES,
               "runs": results, "threads": os.cpu_count()}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=2300.0, help="both runs together; the engine gets half")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--rollout", choices=tuple(ENGINE_BACKEND), default="hf_cpu",
                        help="verl's rollout replica; the engine generates alike (hf or vllm)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="verl_vs_engine_"))
    work.mkdir(parents=True, exist_ok=True)
    end = time.time() + args.budget_s
    results: dict = {}
    results["engine"] = run_engine(work, args.steps, args.budget_s / 2, args.rollout)
    print(save(results, args.steps, args.rollout), flush=True)
    results["verl"] = run_verl(work, args.steps, end - time.time(), args.rollout)
    print(save(results, args.steps, args.rollout), flush=True)


if __name__ == "__main__":
    main()
