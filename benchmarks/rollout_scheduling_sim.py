#!/usr/bin/env python3
"""Rollout scheduling simulator: how request routing changes the time of one synchronous multi-turn rollout.

What it simulates
-----------------
A discrete-event model of one rollout step of the rStar2-Agent recipe (GRPO, ``n = 32`` samples per prompt, at
most 5 assistant turns, one 8,192-token response budget shared by all turns, tool outputs included), served by
``N`` inference servers. Every trajectory starts at t = 0 (verl starts a whole batch at once); the step ends when
the last one does. ``--servers 8 64`` keeps 64 trajectories per server (the reference batch: 128 prompts x 32
samples on 64 servers).

* **Servers** (SGLang-like): a KV pool of ``--capacity`` tokens; continuous batching, every running request
  gains one token per decode step and a step takes ``6 ms + 0.04 ms x batch + 0.03 ms per 1,000 KV tokens``
  (weights, per-sequence work and KV reads of a 14B model on one accelerator), so decode slows as the batch and
  its context grow; prefill costs ``40 us`` per uncached token. Admission as SGLang's: a waiting request is
  admitted while the running requests' context plus ``ratio x min(remaining budget, 4096)`` each still fits,
  ``ratio`` decaying from 0.7 to 0.098 over 600 steps and reset by a retraction; at most 256 running. When a
  decode step would overflow the pool, cached prefixes are evicted first, then the running request with the
  fewest output tokens (ties: longest input) is *retracted*: its KV is dropped and its whole context
  recomputed when it is admitted again (counted as a preemption and as recomputed tokens).
* **Prefix cache**: when a turn ends its context stays cached (evictable, LRU) on that server; the next turn of
  the same trajectory re-prefills only its new tool tokens there, and its whole context anywhere else, or if it
  was evicted (counted as re-prefilled context).
* **Workload** (seeded): prompts of 450-900 tokens (question + tool block); total generated tokens per
  trajectory log-normal, median 2,500 and sigma 0.8 (0.4 of it shared by the 32 samples of a prompt: a hard
  problem is long for all of them), so that about 7% of trajectories run into the 8K budget of section 11 of
  the upstream notes (stage-1 max response 8K; no mean is published there); 1-5 assistant turns (15/30/25/15/
  15%), the generation split between them at random; 20-300 tool-output tokens per call (1,000 characters at
  most); tool latency log-normal, median 0.2 s, mean ~0.33 s (the paper's ~0.3 s average), capped at 5 s.

Policies (same workload and seed for all):

* ``verl-least-requests`` -- verl 0.9.1's default balancer: a trajectory sticks to the server that had the
  fewest in-flight calls at its first turn (random tie-break).
* ``sglang-cache-aware`` -- SGLang router's cache_aware policy per turn: if in-flight counts are imbalanced
  (max - min > 64 and max > 1.5 x min) the least loaded server, else the best prefix match if above 0.3 of the
  request, else the server with the smallest (approximate) radix tree.
* ``least-token-usage`` -- AReaL's: first turn to the server with the fewest used KV tokens (polled every 5 s,
  plus ``prompt + 0.4 x budget`` for each request sent since the poll), then sticky.
* ``kv-capacity (ours)`` -- ``rstar2_agent.rollout.routing.CapacityScheduler`` itself, with the knobs of
  ``rstar2_agent/config/router/kv_capacity.yaml`` and each server's capacity as SGLang reports it: per-turn
  reservation, sticky while within the slack, else most free, FIFO wait when full; servers running turns older
  than ``straggler_age_s`` look fuller (straggler protection).

Output: a table per size (makespan, idle fraction of server time, preemptions, recomputed tokens, re-prefilled
context after a move or eviction, moves) with an ``ideal lower bound`` row (:func:`makespan_lower_bound`: no
router can beat it; the line under the table says which of its two parts binds and how far each policy is from
it, next to a balanced-load estimate that is *not* a bound: the longest turn's decode steps at their fixed cost
plus an even share of every token's per-token cost, what a server that runs such a turn takes when load is
spread evenly, as it must be when first turns are placed before any length is known), the sensitivity table
(with the bound as a ratio too), the line ``ideal lower bound / least-requests: ...`` and the last line
``makespan ratio vs least-requests: 8 servers X, 64 servers Y`` (ours / verl's default). Deterministic for a
seed. Runs in well under a minute on 2 cores.

How to run (writes benchmarks/results/rollout_scheduling_sim.txt; ``--results ''`` writes nothing)::

    python3 benchmarks/rollout_scheduling_sim.py
    python3 benchmarks/rollout_scheduling_sim.py --seed 1 --servers 8 --capacity 200000 --results ''
"""

from __future__ import annotations

import argparse
import collections
import heapq
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from omegaconf import OmegaConf  # noqa: E402

from rstar2_agent.rollout.routing import CapacityScheduler, Ticket  # noqa: E402

ROUTER_YAML = _HERE.parent / "rstar2_agent" / "config" / "router" / "kv_capacity.yaml"

# Workload (see the module docstring)
RESPONSE_LENGTH = 8192
GROUP_SIZE = 32
TRAJ_PER_SERVER = 64
MEDIAN_GEN = 2500.0
SIGMA_GROUP, SIGMA_SAMPLE = 0.4, math.sqrt(0.8 ** 2 - 0.4 ** 2)
TURN_PROBS = (0.15, 0.30, 0.25, 0.15, 0.15)
# Server
CAPACITY = 300_000  # tokens of KV per server (14B model, ~160 KiB/token, ~45 GiB of KV)
STEP_BASE_S, STEP_PER_SEQ_S, STEP_PER_KV_TOKEN_S = 0.006, 0.00004, 0.03e-6
PREFILL_PER_TOKEN_S = 40e-6
MAX_RUNNING = 256
CLIP_ESTIMATE = 4096
RATIO_INIT, RATIO_MIN, RATIO_DECAY_STEPS = 0.7, 0.098, 600
MAX_CHUNK = 16  # decode steps simulated as one event (admission happens between chunks)

POLICIES = ("verl-least-requests", "sglang-cache-aware", "least-token-usage", "kv-capacity (ours)")


# ---- workload ---------------------------------------------------------------------------------------------------

@dataclass
class Turn:
    max_new: int  # the turn's budget, as the agent loop sets max_tokens
    gen: int  # tokens it actually generates
    tool_tokens: int  # tool output appended after it (0 on the last turn)
    tool_s: float


@dataclass
class Traj:
    tid: int
    group: int
    prompt_len: int
    turns: list
    turn: int = 0
    ctx: int = 0  # context at the start of the current turn
    server: Optional[int] = None  # server of the current / last turn
    done_at: float = 0.0


def make_workload(n_traj: int, group_size: int, seed: int) -> list[Traj]:
    rng = random.Random(seed)
    trajs = []
    n_groups = math.ceil(n_traj / group_size)
    for g in range(n_groups):
        prompt_len = rng.randint(450, 900)
        group_mu = math.log(MEDIAN_GEN) + rng.gauss(0, SIGMA_GROUP)
        for _ in range(group_size):
            if len(trajs) == n_traj:
                break
            total = math.exp(group_mu + rng.gauss(0, SIGMA_SAMPLE))
            k = rng.choices(range(1, 6), weights=TURN_PROBS)[0]
            parts = [rng.gammavariate(2.0, 1.0) for _ in range(k)]
            turns, mask = [], 0
            for i, share in enumerate(parts):
                max_new = RESPONSE_LENGTH - mask
                gen = max(1, min(max_new, int(total * share / sum(parts))))
                mask += gen
                last = i == k - 1 or mask >= RESPONSE_LENGTH
                tool = 0 if last else rng.randint(20, 300)
                tool_s = 0.0 if last else min(5.0, math.exp(math.log(0.2) + rng.gauss(0, 1.0)))
                if not last and mask + tool >= RESPONSE_LENGTH:  # the loop stops rather than append it
                    tool, tool_s, last = 0, 0.0, True
                turns.append(Turn(max_new, gen, tool, tool_s))
                mask += tool
                if last:
                    break
            trajs.append(Traj(len(trajs), g, prompt_len, turns, ctx=prompt_len))
    return trajs


def makespan_lower_bound(trajs: list[Traj], servers: int) -> dict:
    """An honest lower bound on the makespan of ``trajs`` on ``servers`` servers, whatever the router does.

    Two bounds, both read off the server model above, and their maximum:

    * ``critical_path_s``: the longest trajectory *alone on an empty server*. Each turn prefills only what is
      not cached (its whole prompt on the first turn, just the previous tool output after that, the prefix being
      cached on that server) and then decodes its tokens one step each at batch 1, a step with context ``c``
      costing ``STEP_BASE_S + STEP_PER_SEQ_S + STEP_PER_KV_TOKEN_S x c``; then the tool call's latency. Any other
      request on the server only lengthens its steps, and a move or an eviction only adds prefill.
    * ``throughput_s``: all the server time the workload needs, spread evenly over the ``servers``. Every decoded
      token costs at least ``STEP_BASE_S / MAX_RUNNING + STEP_PER_SEQ_S`` (the step's fixed cost shared by the
      largest batch allowed) plus ``STEP_PER_KV_TOKEN_S`` x its own context, and every turn at least its
      uncached prefill as above (no recompute, no re-prefill).

    Also returned, *not* a bound: ``balanced_estimate_s``, the longest single turn's decode steps at their fixed
    cost ``STEP_BASE_S`` plus an even share (1 / ``servers``) of every token's per-token cost and all prefill: what
    the server running that turn takes when the load is spread evenly, which is what a router must do when first
    turns are placed before any token exists (all look alike then) and single-turn stragglers cannot move.

    Worked example (the test's): one server, one trajectory, prompt 1,000, one turn of 3 tokens::

        critical path = 1,000 x 40 us + 3 x (6.04 ms) + 0.03e-6 x (1,000 + 1,001 + 1,002) = 0.058210 s
    """
    step0 = STEP_BASE_S + STEP_PER_SEQ_S
    longest, work, per_token, longest_turn = 0.0, 0.0, 0.0, 0
    for t in trajs:
        ctx, alone = t.prompt_len, 0.0
        for i, turn in enumerate(t.turns):
            prefill = t.prompt_len if i == 0 else t.turns[i - 1].tool_tokens
            kv_sum = turn.gen * ctx + turn.gen * (turn.gen - 1) / 2  # contexts of its decode steps, summed
            alone += prefill * PREFILL_PER_TOKEN_S + turn.gen * step0 + STEP_PER_KV_TOKEN_S * kv_sum + turn.tool_s
            work += (prefill * PREFILL_PER_TOKEN_S + turn.gen * (STEP_BASE_S / MAX_RUNNING + STEP_PER_SEQ_S)
                     + STEP_PER_KV_TOKEN_S * kv_sum)
            per_token += prefill * PREFILL_PER_TOKEN_S + turn.gen * STEP_PER_SEQ_S + STEP_PER_KV_TOKEN_S * kv_sum
            longest_turn = max(longest_turn, turn.gen)
            ctx += turn.gen + turn.tool_tokens
        longest = max(longest, alone)
    through = work / servers
    return {"critical_path_s": longest, "throughput_s": through, "lower_bound_s": max(longest, through),
            "balanced_estimate_s": longest_turn * STEP_BASE_S + per_token / servers}


# ---- servers ----------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Req:
    traj: Traj
    ctx: int  # context tokens when the turn started
    target: int  # tokens this turn generates in all
    max_new: int
    out0: int = 0  # tokens generated before the current admission (kept across a retraction)
    p0: int = 0  # server progress at admission
    retracted: bool = False


class Server:
    def __init__(self, sid: int, capacity: int, sim: "Sim"):
        self.sid, self.cap, self.sim = sid, capacity, sim
        self.running: list[Req] = []
        self.finish: list = []  # heap (finish progress, seq, req)
        self.waiting: collections.deque[Req] = collections.deque()
        self.cache: collections.OrderedDict[int, int] = collections.OrderedDict()  # tid -> cached tokens (LRU)
        self.cache_tokens = 0
        self.progress = 0  # decode steps done
        self.S = 0  # kv of running = S + len(running) * progress
        self.last_retract = -10 ** 9
        self.version = 0
        self.busy_until: Optional[float] = None  # end of the chunk in flight
        self.chunk = 0
        self.busy_s = 0.0

    def kv(self) -> int:
        return self.S + len(self.running) * self.progress

    def out(self, r: Req) -> int:
        return r.out0 + self.progress - r.p0

    def ratio(self) -> float:
        done = self.progress - self.last_retract
        return max(RATIO_MIN, RATIO_INIT - (RATIO_INIT - RATIO_MIN) * done / RATIO_DECAY_STEPS)

    def evict(self, need_free: int) -> None:
        while self.cache and self.kv() + self.cache_tokens + need_free > self.cap:
            _, tokens = self.cache.popitem(last=False)
            self.cache_tokens -= tokens

    def arrive(self, req: Req, now: float) -> None:
        self.waiting.append(req)
        if self.busy_until is None:
            self.plan(now)

    def _admit(self) -> int:
        """Admit waiting requests (FCFS) while SGLang's estimate fits; returns tokens to prefill."""
        prefill = 0
        if not self.waiting:
            return 0
        ratio = self.ratio()
        future = sum(ratio * min(r.max_new - self.out(r), CLIP_ESTIMATE) for r in self.running)
        kv = self.kv()
        while self.waiting and len(self.running) < MAX_RUNNING:
            r = self.waiting[0]
            ctx = r.ctx + r.out0
            est = ratio * min(r.max_new - r.out0, CLIP_ESTIMATE)
            if self.running and kv + future + ctx + est > self.cap:
                break
            self.waiting.popleft()
            hit = self.cache.pop(r.traj.tid, 0)
            self.cache_tokens -= hit
            hit = min(hit, ctx)
            st = self.sim.stats
            if r.retracted:
                st["recomputed"] += ctx - hit
            elif r.traj.turn > 0:  # context before the last tool output was computed once already
                reusable = r.ctx - r.traj.turns[r.traj.turn - 1].tool_tokens
                st["reprefilled"] += max(0, reusable - hit)
            prefill += ctx - hit
            r.p0 = self.progress
            self.S += ctx - self.progress
            self.running.append(r)
            self.sim.seq += 1  # tie-break by admission order (never by id(): that would differ between runs)
            heapq.heappush(self.finish, (self.progress + r.target - r.out0, self.sim.seq, r))
            kv += ctx
            future += est
        self.evict(0)
        return prefill

    def _retract(self) -> None:
        """Drop running requests (fewest output tokens first, ties longest input) until the next step fits."""
        self.evict(len(self.running))
        while len(self.running) > 1 and self.kv() + len(self.running) > self.cap:
            victim = min(self.running, key=lambda r: (self.out(r), -(r.ctx + r.out0)))
            self.running.remove(victim)
            self.finish = [e for e in self.finish if e[2] is not victim]
            heapq.heapify(self.finish)
            done = self.out(victim)
            self.S -= victim.ctx + victim.out0 - victim.p0
            victim.out0, victim.retracted = done, True
            self.waiting.appendleft(victim)
            self.sim.stats["preemptions"] += 1
            self.last_retract = self.progress

    def plan(self, now: float) -> None:
        """Between chunks: admit, retract on overflow, then schedule the next chunk of decode steps."""
        prefill = self._admit()
        if not self.running:
            self.busy_until = None
            return
        if self.kv() + len(self.running) > self.cap:
            self._retract()
        b = len(self.running)
        kv = self.kv()
        k = min(MAX_CHUNK, self.finish[0][0] - self.progress, max(1, (self.cap - kv) // b))
        step = STEP_BASE_S + STEP_PER_SEQ_S * b + STEP_PER_KV_TOKEN_S * kv
        dt = prefill * PREFILL_PER_TOKEN_S + k * step + STEP_PER_KV_TOKEN_S * b * k * (k - 1) / 2
        self.chunk = k
        self.busy_until = now + dt
        self.busy_s += dt
        self.version += 1
        self.sim.push(self.busy_until, "chunk", (self, self.version))

    def chunk_end(self, now: float) -> None:
        self.progress += self.chunk
        self.evict(0)
        while self.finish and self.finish[0][0] <= self.progress:
            _, _, r = heapq.heappop(self.finish)
            self.running.remove(r)
            self.S -= r.ctx + r.out0 - r.p0
            tokens = r.ctx + r.target
            old = self.cache.pop(r.traj.tid, 0)
            self.cache[r.traj.tid] = tokens
            self.cache_tokens += tokens - old
            self.sim.turn_done(r.traj, self, now)
        self.evict(0)
        self.plan(now)


# ---- policies ---------------------------------------------------------------------------------------------------

class VerlLeastRequests:
    """verl 0.9.1 GlobalRequestLoadBalancer: sticky; first turn to the fewest in-flight calls, random tie-break."""

    def __init__(self, sim, seed):
        self.sim, self.rng = sim, random.Random(seed + 7)
        self.inflight = [0] * len(sim.servers)
        self.sticky = {}

    def acquire(self, t: Traj, now: float):
        sid = self.sticky.get(t.tid)
        if sid is None:
            low = min(self.inflight)
            sid = self.rng.choice([i for i, c in enumerate(self.inflight) if c == low])
            self.sticky[t.tid] = sid
        self.inflight[sid] += 1
        return sid

    def release(self, t: Traj, sid: int, now: float):
        self.inflight[sid] -= 1
        return ()


class SGLangCacheAware:
    """SGLang router cache_aware (per request): shortest queue when imbalanced, else prefix match > 0.3, else
    the smallest approximate tree. The tree holds what was routed: a group's prompt, each trajectory's context."""

    def __init__(self, sim, seed, abs_threshold=64, rel_threshold=1.5, cache_threshold=0.3):
        self.sim = sim
        n = len(sim.servers)
        self.load = [0] * n
        self.tree = [0] * n
        self.groups = [set() for _ in range(n)]
        self.seen = [dict() for _ in range(n)]  # tid -> context length inserted
        self.abs, self.rel, self.thr = abs_threshold, rel_threshold, cache_threshold

    def _match(self, sid: int, t: Traj) -> int:
        return max(self.seen[sid].get(t.tid, 0), t.prompt_len if t.group in self.groups[sid] else 0)

    def acquire(self, t: Traj, now: float):
        hi, lo = max(self.load), min(self.load)
        if hi - lo > self.abs and hi > lo * self.rel:
            sid = self.load.index(lo)
        else:
            matches = [self._match(s, t) for s in range(len(self.load))]
            best = max(range(len(matches)), key=lambda s: matches[s])
            if matches[best] / t.ctx > self.thr:
                sid = best
            else:
                sid = min(range(len(self.tree)), key=lambda s: self.tree[s])
        self.tree[sid] += t.ctx - min(self._match(sid, t), t.ctx)
        self.groups[sid].add(t.group)
        self.seen[sid][t.tid] = t.ctx
        self.load[sid] += 1
        return sid

    def release(self, t: Traj, sid: int, now: float):
        self.load[sid] -= 1
        return ()


class LeastTokenUsage:
    """AReaL least_token_usage: first turn to the least used KV (polled every 5 s, plus an optimistic
    ``prompt + 0.4 x budget`` per request sent since), then sticky."""

    def __init__(self, sim, seed, poll_s=5.0, coef=0.4):
        self.sim, self.poll_s, self.coef = sim, poll_s, coef
        self.last_poll = -math.inf
        self.usage = [0.0] * len(sim.servers)
        self.sticky = {}

    def acquire(self, t: Traj, now: float):
        sid = self.sticky.get(t.tid)
        if sid is None:
            if now - self.last_poll >= self.poll_s:
                self.usage = [float(s.kv()) for s in self.sim.servers]
                self.last_poll = now
            sid = min(range(len(self.usage)), key=lambda s: self.usage[s])
            self.usage[sid] += t.ctx + self.coef * t.turns[0].max_new
            self.sticky[t.tid] = sid
        return sid

    def release(self, t: Traj, sid: int, now: float):
        return ()


class KVCapacityOurs:
    """rstar2_agent.rollout.routing.CapacityScheduler with the shipped router YAML's knobs. As the balancer does
    with ``capacity_source: sglang`` / ``auto``, every ``refresh_interval_s`` it takes each server's reported use
    (running KV plus waiting prompts, SGLang's ``num_total_tokens``) and corrects it by its own reservations."""

    def __init__(self, sim, seed, knobs: Optional[dict] = None):
        cfg = OmegaConf.to_container(OmegaConf.load(ROUTER_YAML))
        cfg.update(knobs or {})
        self.sched = CapacityScheduler({i: s.cap for i, s in enumerate(sim.servers)},
                                       budget_coef=cfg["budget_coef"], stickiness_slack=cfg["stickiness_slack"],
                                       default_max_new_tokens=cfg["default_max_new_tokens"],
                                       straggler_age_s=cfg["straggler_age_s"],
                                       straggler_penalty=cfg["straggler_penalty"])
        self.sim = sim
        self.refresh_s = float(cfg["refresh_interval_s"]) if cfg["capacity_source"] != "config" else 0.0

    def refresh(self, now: float):
        for i, s in enumerate(self.sim.servers):
            waiting = sum(r.ctx + r.out0 for r in s.waiting)
            self.sched.set_capacity(i, s.cap, used=s.kv() + waiting, source="sglang")
        return [(ticket.payload, lease.server_id) for ticket, lease in self.sched.drain(now=now)]

    def acquire(self, t: Traj, now: float):
        need = self.sched.need_for(t.ctx, {"max_tokens": t.turns[t.turn].max_new})
        lease = self.sched.submit(t.tid, need, Ticket(t.tid, need, payload=t), now=now)
        return None if lease is None else lease.server_id

    def release(self, t: Traj, sid: int, now: float):
        self.sched.release(t.tid, sid)
        return [(ticket.payload, lease.server_id) for ticket, lease in self.sched.drain(now=now)]


POLICY_CLASSES = dict(zip(POLICIES, (VerlLeastRequests, SGLangCacheAware, LeastTokenUsage, KVCapacityOurs)))


# ---- the event loop ---------------------------------------------------------------------------------------------

class Sim:
    def __init__(self, policy: str, servers: int, trajectories_per_server: int, group_size: int, seed: int,
                 capacity: int, knobs: Optional[dict] = None):
        self.events: list = []
        self.seq = 0
        self.stats = collections.Counter()
        self.servers = [Server(i, capacity, self) for i in range(servers)]
        self.trajs = make_workload(servers * trajectories_per_server, group_size, seed)
        cls = POLICY_CLASSES[policy]
        self.policy = cls(self, seed, knobs) if cls is KVCapacityOurs else cls(self, seed)
        self.moves = 0

    def push(self, when: float, kind: str, data) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, data))

    def start_turn(self, t: Traj, now: float) -> None:
        sid = self.policy.acquire(t, now)
        if sid is not None:
            self.dispatch(t, sid, now)

    def dispatch(self, t: Traj, sid: int, now: float) -> None:
        if t.server is not None and t.server != sid:
            self.moves += 1
        t.server = sid
        turn = t.turns[t.turn]
        self.servers[sid].arrive(Req(t, t.ctx, turn.gen, turn.max_new), now)

    def turn_done(self, t: Traj, server: Server, now: float) -> None:
        turn = t.turns[t.turn]
        for placed, sid in self.policy.release(t, server.sid, now):
            self.dispatch(placed, sid, now)
        t.ctx += turn.gen + turn.tool_tokens
        t.turn += 1
        if t.turn < len(t.turns):
            self.push(now + turn.tool_s, "turn", t)
        else:
            t.done_at = now

    def run(self) -> dict:
        refresh_s = getattr(self.policy, "refresh_s", 0.0)
        if refresh_s:
            self.policy.refresh(0.0)
            self.push(refresh_s, "refresh", None)
        for t in self.trajs:
            self.start_turn(t, 0.0)
        while self.events:
            now, _, kind, data = heapq.heappop(self.events)
            if kind == "chunk":
                server, version = data
                if version == server.version:
                    server.chunk_end(now)
            elif kind == "refresh":
                if any(t.turn < len(t.turns) for t in self.trajs):
                    for placed, sid in self.policy.refresh(now):
                        self.dispatch(placed, sid, now)
                    self.push(now + refresh_s, "refresh", None)
            else:
                self.start_turn(data, now)
        assert all(t.turn == len(t.turns) for t in self.trajs), "a trajectory never finished"
        makespan = max(t.done_at for t in self.trajs)
        busy = sum(s.busy_s for s in self.servers)
        return {
            "makespan_s": round(makespan, 3),
            "idle_frac": round(1 - busy / (len(self.servers) * makespan), 4),
            "preemptions": self.stats["preemptions"],
            "recomputed_tokens": self.stats["recomputed"],
            "reprefilled_tokens": self.stats["reprefilled"],
            "moves": self.moves,
        }


def run_all(servers: int, trajectories_per_server: int = TRAJ_PER_SERVER, group_size: int = GROUP_SIZE,
            seed: int = 0, capacity: int = CAPACITY, knobs: Optional[dict] = None) -> dict:
    """Every policy on one seeded workload: ``{policy: metrics}``."""
    return {p: Sim(p, servers, trajectories_per_server, group_size, seed, capacity, knobs).run() for p in POLICIES}


def main(argv: Optional[list[str]] = None) -> int:
    from recorded import default_path, recorded

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--capacity", type=int, default=CAPACITY, help="KV tokens per server")
    ap.add_argument("--trajectories-per-server", type=int, default=TRAJ_PER_SERVER)
    ap.add_argument("--sensitivity", type=int, default=1,
                    help="1: also the makespan ratios for two more seeds and two smaller KV pools (0: skip)")
    ap.add_argument("--results", default=default_path(__file__))
    args = ap.parse_args(argv)
    with recorded(args.results):
        print(f"rollout scheduling simulator: seed {args.seed}, {args.trajectories_per_server} trajectories per "
              f"server (groups of {GROUP_SIZE}), KV capacity {args.capacity:,} tokens per server, response budget "
              f"{RESPONSE_LENGTH}, router knobs from {ROUTER_YAML.relative_to(_HERE.parent)}")
        ratios, bounds = {}, {}
        for n in args.servers:
            res = run_all(n, args.trajectories_per_server, GROUP_SIZE, args.seed, args.capacity)
            print(f"\n{n} servers, {n * args.trajectories_per_server} trajectories")
            print("| policy | makespan (s) | idle | preemptions | recomputed tokens | re-prefilled context tokens | moves |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for p, r in res.items():
                print(f"| {p} | {r['makespan_s']:.1f} | {100 * r['idle_frac']:.1f}% | {r['preemptions']} | "
                      f"{r['recomputed_tokens']:,} | {r['reprefilled_tokens']:,} | {r['moves']} |")
            lb = makespan_lower_bound(make_workload(n * args.trajectories_per_server, GROUP_SIZE, args.seed), n)
            print(f"| ideal lower bound | {lb['lower_bound_s']:.1f} | - | - | - | - | - |")
            verl_s, ours_s = res["verl-least-requests"]["makespan_s"], res["kv-capacity (ours)"]["makespan_s"]
            print(f"\nideal lower bound = max(longest trajectory alone on an empty server "
                  f"{lb['critical_path_s']:.1f} s, all work at the best throughput / {n} servers "
                  f"{lb['throughput_s']:.1f} s); verl-least-requests is {verl_s / lb['lower_bound_s']:.2f}x it, ours "
                  f"{ours_s / lb['lower_bound_s']:.2f}x; balanced-load estimate (not a bound) "
                  f"{lb['balanced_estimate_s']:.1f} s")
            ratios[n] = res["kv-capacity (ours)"]["makespan_s"] / res["verl-least-requests"]["makespan_s"]
            bounds[n] = lb["lower_bound_s"] / res["verl-least-requests"]["makespan_s"]
        if args.sensitivity:
            print("\nSensitivity: makespan / verl-least-requests' makespan (preemptions) per policy")
            print("| seed | KV per server | servers | verl (s) | " + " | ".join(POLICIES[1:])
                  + " | ideal lower bound |")
            print("|---:|---:|---:|---:|" + "---:|" * len(POLICIES))
            for seed, cap in ((args.seed + 1, args.capacity), (args.seed + 2, args.capacity),
                              (args.seed, args.capacity // 3), (args.seed, args.capacity // 6)):
                for n in args.servers:
                    res = run_all(n, args.trajectories_per_server, GROUP_SIZE, seed, cap)
                    base = res["verl-least-requests"]
                    cells = [f"{r['makespan_s'] / base['makespan_s']:.3f} ({r['preemptions']})"
                             for p, r in res.items() if p != "verl-least-requests"]
                    lb = makespan_lower_bound(make_workload(n * args.trajectories_per_server, GROUP_SIZE, seed), n)
                    print(f"| {seed} | {cap:,} | {n} | {base['makespan_s']:.1f} ({base['preemptions']}) | "
                          + " | ".join(cells) + f" | {lb['lower_bound_s'] / base['makespan_s']:.3f} |")
        print()
        print("ideal lower bound / least-requests: " + ", ".join(f"{n} servers {r:.3f}" for n, r in bounds.items()))
        print("makespan ratio vs least-requests: " + ", ".join(f"{n} servers {r:.3f}" for n, r in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
