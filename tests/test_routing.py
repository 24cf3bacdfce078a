"""The KV-capacity rollout balancer (rstar2_agent/rollout/routing.py): verl's own loader builds it from a router
YAML, its accounting stays exact under concurrency, cancellation and out-of-order releases, it waits without
polling, it does not starve an oversized turn, and the scheduling simulator is deterministic."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rstar2_agent.rollout import routing
from rstar2_agent.rollout.routing import NO_SERVERS, CapacityScheduler, KVCapacityLoadBalancer, choose_server

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_YAML = ROOT / "rstar2_agent" / "config" / "router" / "kv_capacity.yaml"


def balancer(n_servers=2, capacity=1000, **knobs) -> KVCapacityLoadBalancer:
    cfg = {"router_class": "rstar2_agent.rollout.routing.KVCapacityLoadBalancerActor", "capacity_source": "config",
           "capacity_tokens": capacity, "budget_coef": 1.0, **knobs}
    return KVCapacityLoadBalancer({f"s{i}": f"handle{i}" for i in range(n_servers)}, cfg)


def reserved(lb) -> dict:
    return lb.get_status()["reserved_tokens"]


def sp(max_tokens):
    return {"max_tokens": max_tokens}


# ---- pure logic -------------------------------------------------------------------------------------------------

def test_reservation_and_choice():
    assert routing.reservation_tokens(1000, 8000, 0.5) == 5000
    assert routing.reservation_tokens(1000, 8000, 0.5, n=2) == 10000
    assert routing.max_new_tokens({"max_new_tokens": 7}, 99) == 7 and routing.max_new_tokens({}, 99) == 99
    caps = {"a": 100, "b": 100}
    assert choose_server({"a": 50, "b": 90}, caps, 10, None, 0.25) == "b"  # most free
    assert choose_server({"a": 70, "b": 90}, caps, 10, "a", 0.25) == "a"  # sticky within the slack
    assert choose_server({"a": 60, "b": 90}, caps, 10, "a", 0.25) == "b"  # too much fuller: moves
    assert choose_server({"a": 60, "b": 90}, caps, 10, "a", 1.0) == "a"  # slack 1: sticky while it fits
    assert choose_server({"a": 5, "b": 90}, caps, 10, "a", 1.0) == "b"  # no room on the previous one
    assert choose_server({"a": 5, "b": 9}, caps, 10, None, 0.25) is None  # nowhere: wait
    assert choose_server({"a": 100, "b": 90}, caps, 500, None, 0.0) == "a"  # oversized fits an empty server


# ---- verl's loader and the Ray actor ----------------------------------------------------------------------------

def test_shipped_yaml_is_what_verl_loads_and_our_class_accepts_it():
    from verl.workers.rollout.router import _load_router_yaml, _resolve_router_class

    cfg = _load_router_yaml(str(SHIPPED_YAML))
    cls = _resolve_router_class(cfg["router_class"])
    import ray

    assert isinstance(cls, ray.actor.ActorClass)  # verl keeps it as it is: our max_concurrency holds
    assert cls._default_options["max_concurrency"] == routing.MAX_CONCURRENCY >= 100_000  # releases never queue
    lb = KVCapacityLoadBalancer({"s0": None}, cfg)  # every key is a known knob
    assert lb.scheduler.budget_coef == cfg["budget_coef"] and lb.config["capacity_source"] == "auto"
    with pytest.raises(ValueError, match="unknown router settings"):
        KVCapacityLoadBalancer({}, {**cfg, "budget_coeff": 0.5})


def test_trainer_config_turns_it_on_and_one_override_turns_it_off():
    from hydra import compose, initialize_config_dir

    import rstar2_agent.main  # noqa: F401 - resolvers, as the entry point registers them
    from rstar2_agent.verl_plugins import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        on = compose("rstar2_agent_trainer")
        off = compose("rstar2_agent_trainer", overrides=["actor_rollout_ref.rollout.router_config_path=null"])
    assert on.actor_rollout_ref.rollout.router_config_path == str(SHIPPED_YAML)
    assert off.actor_rollout_ref.rollout.router_config_path is None


@pytest.fixture(scope="module")
def ray_local():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    if started:
        ray.shutdown()


async def test_verl_builds_and_drives_it_as_a_ray_actor(ray_local, tmp_path):
    """verl's own get_router_handle reads router_config_path and builds the actor; verl's own LLMServerClient
    negotiates the fields and acquires/releases through it."""
    from verl.workers.rollout.llm_server import LLMServerClient
    from verl.workers.rollout.router import get_router_handle

    from omegaconf import OmegaConf

    path = tmp_path / "router.yaml"
    cfg = OmegaConf.load(SHIPPED_YAML)
    cfg.update({"capacity_source": "config", "capacity_tokens": 1000, "budget_coef": 0.5})
    OmegaConf.save(cfg, path)
    actor = get_router_handle({"s0": "h0", "s1": "h1"}, router_config_path=str(path))
    client = LLMServerClient(config=None, load_balancer_handle=actor)
    first = await client._acquire_server("r1", prompt_ids=[1] * 100, sampling_params={"max_tokens": 800})
    second = await client._acquire_server("r2", prompt_ids=[1] * 100, sampling_params={"max_tokens": 800})
    assert {first[0], second[0]} == {"s0", "s1"} and first[1] == {"s0": "h0", "s1": "h1"}[first[0]]
    waiting = asyncio.ensure_future(client._acquire_server("r3", prompt_ids=[1] * 600, sampling_params={}))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # 100 + 0.5*800 = 500 reserved on each; 600 + 0.5*8192 clamps to 1000: waits
    status = await actor.get_status.remote()
    assert status["waiting"] == 1 and status["reserved_tokens"] == {"s0": 500, "s1": 500}
    client._release_server(first[0], request_id="r1")
    third = await asyncio.wait_for(waiting, 10)
    assert third[0] == first[0]
    client._release_server(second[0], request_id="r2")
    client._release_server(third[0], request_id="r3")
    for _ in range(50):
        status = await actor.get_status.remote()
        if status["total_inflight"] == 0:
            break
        await asyncio.sleep(0.05)
    assert status["reserved_tokens"] == {"s0": 0, "s1": 0} and status["clamped"] == 1
    assert status["turns"]["s0"] >= 1 and status["turns"]["s1"] >= 1
    ray_local.kill(actor)


# ---- accounting -------------------------------------------------------------------------------------------------

async def test_thousands_of_concurrent_turns_keep_the_accounting_exact():
    lb = balancer(n_servers=4, capacity=5000, stickiness_slack=0.5)
    rng = random.Random(0)
    peak = {"over": 0}

    async def trajectory(i):
        rid = f"t{i}"
        for _turn in range(3):
            sid, _ = await lb.acquire_server(rid, prompt_ids=[0] * rng.randint(10, 400), sampling_params=sp(rng.randint(0, 900)))
            for s, book in lb.scheduler.servers.items():
                peak["over"] += book.reserved > book.capacity
            await asyncio.sleep(0 if rng.random() < 0.5 else 0.001)
            if rng.random() < 0.3:  # verl's fire-and-forget release can land after the next acquire
                asyncio.get_running_loop().call_soon(lb.release_server, sid, rid)
            else:
                lb.release_server(sid, rid)

    await asyncio.gather(*(trajectory(i) for i in range(3000)))
    await asyncio.sleep(0)
    status = lb.get_status()
    assert peak["over"] == 0
    assert status["total_inflight"] == 0 and set(status["reserved_tokens"].values()) == {0}
    assert status["acquires"] == 9000 and status["waits"] > 0 and status["unmatched_releases"] == 0
    assert all(n > 0 for n in status["turns"].values())


async def test_out_of_order_duplicate_and_unknown_releases():
    lb = balancer(n_servers=2, capacity=1000, stickiness_slack=1.0)
    s1, _ = await lb.acquire_server("a", prompt_ids=[0] * 100, sampling_params=sp(0))  # turn 1: 100
    s2, _ = await lb.acquire_server("a", prompt_ids=[0] * 300, sampling_params=sp(0))  # turn 2: 300, same server
    assert s1 == s2 and reserved(lb)[s1] == 400
    lb.release_server(s1, "a")  # turn 1's release, late: the oldest lease goes
    assert reserved(lb)[s1] == 300
    lb.release_server(s1, "a")
    lb.release_server(s1, "a")  # duplicate
    lb.release_server("nowhere", "zzz")  # unknown
    assert reserved(lb) == {"s0": 0, "s1": 0} and lb.get_status()["unmatched_releases"] == 2
    # a lease on another server is matched by server first, then by age
    x, _ = await lb.acquire_server("b", prompt_ids=[0] * 900, sampling_params=sp(0))
    y, _ = await lb.acquire_server("b", prompt_ids=[0] * 500, sampling_params=sp(0))
    assert x != y
    lb.release_server(y, "b")
    assert reserved(lb) == {x: 900, y: 0}
    lb.release_server(x, None)  # no request id: the oldest lease on that server
    assert lb.get_total_inflight() == 0


async def test_cancelled_waiters_leak_nothing_even_when_cancelled_after_placement():
    lb = balancer(n_servers=1, capacity=1000)
    s, _ = await lb.acquire_server("full", prompt_ids=[0] * 1000, sampling_params=sp(0))
    tasks = [asyncio.ensure_future(lb.acquire_server(f"w{i}", prompt_ids=[0] * 400, sampling_params=sp(0)))
             for i in range(5)]
    await asyncio.sleep(0.01)
    assert lb.get_status()["waiting"] == 5
    tasks[1].cancel()
    await asyncio.sleep(0)
    assert lb.get_status()["waiting"] == 4
    lb.release_server(s, "full")  # room for w0 and w2: both futures are resolved now...
    tasks[2].cancel()  # ...and w2's caller goes away before it ran: its placement must be undone
    await asyncio.sleep(0.01)
    assert tasks[0].done() and tasks[2].cancelled() and tasks[3].done()  # w3 took w2's room
    assert reserved(lb)["s0"] == 800 and lb.get_status()["cancelled_after_placement"] == 1
    for t in (tasks[0], tasks[3]):
        sid, _ = t.result()
        lb.release_server(sid, {tasks[0]: "w0", tasks[3]: "w3"}[t])
    sid, _ = await asyncio.wait_for(tasks[4], 1)
    lb.release_server(sid, "w4")
    assert reserved(lb)["s0"] == 0 and lb.get_total_inflight() == 0 and lb.get_status()["waiting"] == 0


async def test_an_oversized_turn_is_clamped_and_not_starved_by_small_ones():
    lb = balancer(n_servers=2, capacity=1000)
    held = [await lb.acquire_server(f"h{i}", prompt_ids=[0] * 300, sampling_params=sp(0)) for i in range(2)]
    big = asyncio.ensure_future(lb.acquire_server("big", prompt_ids=[0] * 5000, sampling_params=sp(0)))
    await asyncio.sleep(0)
    small = [asyncio.ensure_future(lb.acquire_server(f"x{i}", prompt_ids=[0] * 10, sampling_params=sp(0)))
             for i in range(20)]
    await asyncio.sleep(0.01)
    assert not big.done() and not any(t.done() for t in small)  # strict FIFO: nobody overtakes the big one
    lb.release_server(held[0][0], "h0")
    sid, _ = await asyncio.wait_for(big, 1)
    assert sid == held[0][0] and reserved(lb)[sid] == 1000 and lb.get_status()["clamped"] == 1
    await asyncio.sleep(0.01)
    assert all(t.done() for t in small)  # the small ones fit beside h1 at once, once the big one is placed
    lb.release_server(sid, "big")
    lb.release_server(held[1][0], "h1")
    for i, t in enumerate(small):
        lb.release_server(t.result()[0], f"x{i}")
    assert lb.get_total_inflight() == 0 and set(reserved(lb).values()) == {0}


async def test_waiting_does_not_poll():
    lb = balancer(n_servers=1, capacity=100)
    s, _ = await lb.acquire_server("a", prompt_ids=[0] * 100, sampling_params=sp(0))
    calls = {"n": 0}
    place = lb.scheduler._place

    def counting(*a, **k):
        calls["n"] += 1
        return place(*a, **k)

    lb.scheduler._place = counting
    waiter = asyncio.ensure_future(lb.acquire_server("b", prompt_ids=[0] * 50, sampling_params=sp(0)))
    await asyncio.sleep(0.3)
    assert calls["n"] == 1 and not waiter.done()  # one try on arrival, then never re-tried while nothing changes
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    lb.release_server(s, "a")
    await asyncio.wait_for(waiter, 1)
    assert calls["n"] == 2 and loop.time() - t0 < 0.05


async def test_stickiness_and_moves():
    lb = balancer(n_servers=2, capacity=1000, stickiness_slack=0.25)
    s, _ = await lb.acquire_server("t", prompt_ids=[0] * 100, sampling_params=sp(0))
    lb.release_server(s, "t")
    other = "s1" if s == "s0" else "s0"
    filler = await lb.acquire_server("f", prompt_ids=[0] * 200, sampling_params=sp(0))  # goes to the emptiest...
    assert filler[0] == s  # ...tie: first server; t's previous server now has 800/1000 free
    again, _ = await lb.acquire_server("t", prompt_ids=[0] * 150, sampling_params=sp(0))
    assert again == s  # 0.8 >= 1.0 - 0.25: stays
    lb.release_server(again, "t")
    big = await lb.acquire_server("g", prompt_ids=[0] * 300, sampling_params=sp(0))
    assert big[0] == other
    more = await lb.acquire_server("h", prompt_ids=[0] * 400, sampling_params=sp(0))
    assert more[0] == s  # s: 800 free vs other 700
    moved, _ = await lb.acquire_server("t", prompt_ids=[0] * 150, sampling_params=sp(0))
    assert moved == other  # s has 0.4 free, other 0.7: more than the slack apart
    status = lb.get_status()
    assert status["moves"] == 1 and status["sticky"] == 1
    assert lb.clear_sticky_cache()["cleared_entries"] == 4 and lb.scheduler.previous == {}


async def test_empty_pool_raises_verls_error_and_fails_waiters_when_the_pool_empties():
    with pytest.raises(RuntimeError, match=f"^{NO_SERVERS}$"):
        await KVCapacityLoadBalancer({}, {"capacity_source": "config"}).acquire_server("r", prompt_ids=[1])
    lb = balancer(n_servers=1, capacity=100)
    await lb.acquire_server("a", prompt_ids=[0] * 100, sampling_params=sp(0))
    waiter = asyncio.ensure_future(lb.acquire_server("b", prompt_ids=[0] * 10, sampling_params=sp(0)))
    await asyncio.sleep(0)
    lb.remove_servers(["s0"])
    with pytest.raises(RuntimeError, match=NO_SERVERS):
        await waiter
    assert lb.get_all_servers() == [] and lb.get_total_inflight() == 0 and lb.get_status()["waiting"] == 0
    lb.add_servers({"s9": "h9"})
    sid, handle = await lb.acquire_server("c", prompt_ids=[0] * 10, sampling_params=sp(0))
    assert (sid, handle) == ("s9", "h9")


async def test_capacity_read_from_the_server_and_corrected_by_our_reservations(monkeypatch):
    async def loads(server_id, timeout_s):
        return {"s0": (2000, 1500), "s1": (1000, 0)}[server_id]

    monkeypatch.setattr(routing, "read_sglang_loads", loads)
    lb = balancer(n_servers=2, capacity=10, capacity_source="sglang", refresh_interval_s=3600)
    sid, _ = await lb.acquire_server("a", prompt_ids=[0] * 100, sampling_params=sp(0))
    status = lb.get_status()
    assert status["capacity_source"] == {"s0": "sglang", "s1": "sglang"}
    assert sid == "s1" and status["free_tokens"] == {"s0": 500, "s1": 900}
    s2, _ = await lb.acquire_server("b", prompt_ids=[0] * 600, sampling_params=sp(0))
    assert s2 == "s1" and lb.get_status()["free_tokens"]["s1"] == 300  # 0 reported + 700 placed since


def test_scheduler_is_strict_fifo_and_exact():
    s = CapacityScheduler({"s0": 100}, budget_coef=1.0)
    a = s.submit("a", 60)
    assert a is not None and s.submit("b", 60) is None and s.submit("c", 10) is None  # c does not overtake b
    assert s.release("a", "s0") is a
    placed = s.drain()
    assert [t.request_id for t, _ in placed] == ["b", "c"] and s.servers["s0"].reserved == 70


def test_the_worked_example_of_the_module_docstring():
    s = CapacityScheduler({"s0": 10000, "s1": 10000}, budget_coef=0.5, stickiness_slack=0.25)
    need = lambda prompt, max_tokens: s.need_for(prompt, {"max_tokens": max_tokens})  # noqa: E731
    assert need(1000, 8000) == 5000
    assert [s.submit(r, need(1000, 8000)).server_id for r in "abcd"] == ["s0", "s1", "s0", "s1"]
    assert s.submit("e", need(1000, 8000)) is None
    s.release("a", "s0")
    assert [(t.request_id, lease.server_id) for t, lease in s.drain()] == [("e", "s0")]
    s.release("b", "s1")
    assert s.submit("b", need(3000, 6000)) is None  # 6,000 needed, 5,000 free on s1, none on s0
    s.release("d", "s1")
    assert [(t.request_id, lease.server_id) for t, lease in s.drain()] == [("b", "s1")]


def test_straggler_protection_steers_new_turns_off_servers_running_old_turns():
    s = CapacityScheduler({"s0": 10000, "s1": 10000}, budget_coef=0.0, stickiness_slack=0.1,
                          straggler_age_s=10.0, straggler_penalty=0.05)
    assert s.submit("long", 1000, now=0.0).server_id == "s0"
    assert s.submit("short", 1500, now=0.0).server_id == "s1"  # s1 is emptier
    assert s.penalties(now=9.0) == {}  # nothing is old yet
    assert s.penalties(now=10.0) == {"s0": 500, "s1": 500}
    s.release("short", "s1")
    # at t=12 s0 (9,000 free, one old turn: looks 8,500) vs s1 (10,000, none): a new turn goes to s1
    assert s.submit("c", 500, now=12.0).server_id == "s1"
    # once the old turn is gone nothing is penalized: the emptier s0 wins again
    s.release("long", "s0")
    assert s.penalties(now=12.0) == {} and s.submit("d", 500, now=12.0).server_id == "s0"
    # the penalty changes the choice, never whether a turn fits: a server with room is used even if "full" by it
    t = CapacityScheduler({"s0": 1000}, straggler_age_s=1.0, straggler_penalty=1.0)
    t.submit("x", 100, now=0.0)
    assert t.penalties(now=5.0) == {"s0": 1000} and t.submit("y", 800, now=5.0).server_id == "s0"
    # off: no penalties at all
    assert CapacityScheduler({"s0": 10}, straggler_penalty=0.0).penalties(now=1e9) == {}
    # choose_server: the penalty ranks, the real free tokens decide fitting
    caps = {"a": 100, "b": 100}
    assert choose_server({"a": 90, "b": 80}, caps, 10, None, 0.0, {"a": 20}) == "b"
    assert choose_server({"a": 90, "b": 80}, caps, 10, "a", 0.15, {"a": 20}) == "a"  # 0.70 >= 0.80 - 0.15
    assert choose_server({"a": 90, "b": 80}, caps, 10, "a", 0.05, {"a": 20}) == "b"
    assert choose_server({"a": 90, "b": 5}, caps, 10, None, 0.0, {"a": 200}) == "a"


# ---- the simulator ----------------------------------------------------------------------------------------------

def load_sim():
    spec = importlib.util.spec_from_file_location("rollout_scheduling_sim", ROOT / "benchmarks" / "rollout_scheduling_sim.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_simulator_is_deterministic_and_uses_the_balancers_logic():
    sim = load_sim()
    # our policy in the simulator is the balancer's own scheduler (which places turns with routing.choose_server)
    assert sim.CapacityScheduler is routing.CapacityScheduler and not hasattr(sim, "choose_server")
    kw = dict(servers=2, trajectories_per_server=12, group_size=4, seed=3)
    first = sim.run_all(**kw)
    # a second run in a fresh process (object ids, hashing and import order all differ there)
    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import rollout_scheduling_sim as s; "
            f"print(json.dumps(s.run_all(**{kw!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == first, out.stderr[-2000:]
    assert sim.run_all(**{**kw, "seed": 4}) != first
    assert set(first) == set(sim.POLICIES) and all(r["makespan_s"] > 0 for r in first.values())
    ours = sim.Sim("kv-capacity (ours)", **{k: v for k, v in kw.items()}, capacity=sim.CAPACITY)
    ours.run()
    status = ours.policy.sched.status()  # the balancer's own accounting, driven by the simulator
    assert status["acquires"] == sum(len(t.turns) for t in ours.trajs) and status["total_inflight"] == 0
    assert set(status["reserved_tokens"].values()) == {0} and status["unmatched_releases"] == 0


def test_simulator_lower_bound_by_hand_and_below_every_policy():
    sim = load_sim()
    one = [sim.Traj(0, 0, 1000, [sim.Turn(max_new=8192, gen=3, tool_tokens=0, tool_s=0.0)], ctx=1000)]
    lb = sim.makespan_lower_bound(one, servers=1)
    # alone: prefill 1,000 x 40 us, then 3 steps at batch 1 with contexts 1,000, 1,001, 1,002
    assert lb["critical_path_s"] == pytest.approx(1000 * 40e-6 + 3 * 0.00604 + 0.03e-6 * 3003)  # 0.058210 s
    # throughput: the step's 6 ms shared by a batch of 256, per token
    assert lb["throughput_s"] == pytest.approx(1000 * 40e-6 + 3 * (0.006 / 256 + 0.00004) + 0.03e-6 * 3003)
    assert lb["lower_bound_s"] == lb["critical_path_s"]
    two = [sim.Traj(0, 0, 100, [sim.Turn(8192, 2, 50, 1.5), sim.Turn(8042, 1, 0, 0.0)], ctx=100)]
    # turn 2 prefills only the 50 tool tokens (its prefix is cached), decodes with context 152; the tool waits 1.5 s
    by_hand = (100 * 40e-6 + 2 * 0.00604 + 0.03e-6 * (100 + 101) + 1.5
               + 50 * 40e-6 + 1 * 0.00604 + 0.03e-6 * 152)
    assert sim.makespan_lower_bound(two, 1)["critical_path_s"] == pytest.approx(by_hand)
    # 1,000 copies of the first one on 2 servers: the throughput part binds, and halves with twice the servers
    many = one * 1000
    assert sim.makespan_lower_bound(many, 2)["lower_bound_s"] == pytest.approx(500 * lb["throughput_s"])
    assert sim.makespan_lower_bound(many, 4)["throughput_s"] == pytest.approx(250 * lb["throughput_s"])
    # and it is a bound: no policy beats it on a simulated workload
    for servers, cap in ((2, sim.CAPACITY), (3, 20_000)):
        res = sim.run_all(servers=servers, trajectories_per_server=12, group_size=4, seed=5, capacity=cap)
        bound = sim.makespan_lower_bound(sim.make_workload(servers * 12, 4, 5), servers)["lower_bound_s"]
        assert all(r["makespan_s"] >= bound for r in res.values()), (bound, res)


# ---- verl's own trainer on CPU ----------------------------------------------------------------------------------

PROBE = '''
import json
from rstar2_agent.rollout.routing import KVCapacityLoadBalancer


class ProbeBalancer(KVCapacityLoadBalancer):
    """Our balancer, writing get_status() to a file after every release."""

    def __init__(self, servers, config):
        config = dict(config)
        self._status_path = config.pop("status_path")
        super().__init__(servers, config)

    def release_server(self, server_id, request_id=None):
        super().release_server(server_id, request_id)
        with open(self._status_path, "w") as f:
            json.dump(self.get_status(), f)
'''


@pytest.mark.timeout(1500)  # a whole verl training step: 1.5 min on a quiet 2-core machine, far more under load
def test_a_verl_cpu_training_step_with_two_replicas_routes_through_the_balancer(tmp_path):
    """`python3 -m rstar2_agent.main --config-name rstar2_agent_trainer_cpu` with two trainer workers, hence two
    `hf_cpu` rollout replicas, and router_config_path naming our balancer: verl builds it, every turn of the step
    goes through it, both replicas are used and every reservation comes back."""
    from rstar2_agent.verl_cpu.data import build
    from rstar2_agent.verl_cpu.models import save_tiny

    (tmp_path / "status_probe.py").write_text(PROBE)
    status_path = tmp_path / "status.json"
    (tmp_path / "router.yaml").write_text(
        f"router_class: status_probe.ProbeBalancer\nstatus_path: {status_path}\n"
        "capacity_source: config\ncapacity_tokens: 4096\nbudget_coef: 0.1\n")
    data = build(str(tmp_path / "data"), limit=16)
    cmd = [sys.executable, "-m", "rstar2_agent.main", "--config-name", "rstar2_agent_trainer_cpu",
           f"cpu_model={save_tiny(str(tmp_path / 'tiny'))}", f"data.train_files={data['train']}",
           f"data.val_files={data['test']}", "trainer.total_training_steps=1",
           f"trainer.default_local_dir={tmp_path / 'ckpt'}", "actor_rollout_ref.rollout.n=4",
           "trainer.n_gpus_per_node=2", "ray_kwargs.ray_init.num_gpus=2",
           f"actor_rollout_ref.rollout.router_config_path={tmp_path / 'router.yaml'}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=str(tmp_path), env=env)
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "step:1 - " in log, log[-6000:]
    status = json.loads(status_path.read_text())
    assert len(status["turns"]) == 2 and all(n > 0 for n in status["turns"].values()), status
    assert status["acquires"] == sum(status["turns"].values()) >= 8  # 2 prompts x 4 samples, >= 1 turn each
    assert status["total_inflight"] == 0 and set(status["reserved_tokens"].values()) == {0}
    assert status["unmatched_releases"] == 0
    turns = re.search(r"router/turns:(\d+(?:\.\d+)?)", log)  # our trainer logs the balancer's view of the step
    assert turns and float(turns.group(1)) >= 8 and "router/turns_max_over_mean:" in log, log[-3000:]


def test_status_metrics_are_the_steps_increments_and_nothing_for_another_balancer():
    from rstar2_agent.rollout.routing import status_metrics

    first = {"acquires": 8, "waits": 0, "wait_s": 0.0, "moves": 0, "sticky": 4, "clamped": 0,
             "turns": {"a": 4, "b": 4}, "free_tokens": {"a": 4096, "b": 4000}}
    m = status_metrics(first)
    assert (m["router/turns"], m["router/sticky_ratio"], m["router/turns_max_over_mean"]) == (8.0, 0.5, 1.0)
    assert m["router/free_tokens_min"] == 4000.0
    second = dict(first, acquires=20, sticky=10, moves=3, turns={"a": 13, "b": 7})
    m = status_metrics(second, first)
    assert (m["router/turns"], m["router/moves"], m["router/sticky_ratio"]) == (12.0, 3.0, 0.5)
    assert m["router/turns_max_over_mean"] == 1.5  # 9 and 3 turns this step
    assert status_metrics({"servers": {"a": 0}, "total_inflight": 0}) == {}  # verl's default balancer
