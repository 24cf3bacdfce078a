"""KV-capacity load balancing of rollout requests: a verl 0.9.1 router plug-in.

What it does
------------
verl 0.9.1 sends every ``generate()`` call (one assistant turn) through a shared load balancer. Its default
sticks a trajectory to the server with the fewest in-flight calls at its first turn; since a whole batch starts
at once, that is an equal split by count, pinned for life, blind to lengths and KV memory. A server that drew the
long trajectories then overflows its KV cache (its engine preempts requests and recomputes them later) while
others sit idle.

This balancer routes by free KV capacity instead:

* each turn *reserves* ``len(prompt_ids) + ceil(budget_coef * max_new_tokens)`` tokens on one server (times
  ``n`` when a call asks for several samples) and releases exactly that when the turn ends; a trajectory waiting
  on a tool holds nothing;
* it prefers the trajectory's previous server (its prefix is cached there) while that server has room and is not
  much fuller than the emptiest one (``stickiness_slack``), and otherwise takes the server with the most free
  tokens;
* when no server has room the turn waits, oldest first, without polling: a release or a capacity refresh wakes
  the head of the queue;
* *straggler protection*: a turn still in flight ``straggler_age_s`` after it was placed is a likely straggler
  (a rollout's makespan is set by its longest trajectories, and a decode step slows with its server's batch and
  KV), so each such turn makes its server look ``straggler_penalty`` of its capacity fuller when new turns are
  placed (stickiness included): short work drifts away from the servers that run the long tail. A router cannot
  know a turn's future length; the age of its in-flight turns is what it does know (``0`` turns it off);
* a reservation larger than a server is clamped to that server's capacity, so an oversized turn waits at most
  until one server drains and cannot starve;
* releases are matched to reservations through a FIFO of leases per request id, so duplicate, unknown or
  out-of-order releases (verl's release is fire-and-forget, and an async actor may run it after the same
  trajectory's next acquire) never corrupt the accounting, and a caller cancelled while waiting leaves nothing
  behind.

Worked example (two servers of 10,000 tokens, ``budget_coef=0.5``, ``stickiness_slack=0.25``)::

    turn 1 of "a": prompt 1,000, max_tokens 8,000 -> needs 1,000 + 4,000 = 5,000; both empty -> s0 (first)
    turn 1 of "b": same need 5,000             -> s1 has 10,000 free, s0 5,000 -> s1
    turn 1 of "c": same need 5,000             -> s0 and s1 both have 5,000 free -> s0 (tie: first)
    turn 1 of "d": same need 5,000             -> s1
    turn 1 of "e": same                        -> nothing free: "e" waits
    "a" releases (5,000 back on s0)            -> "e" is placed on s0 at once
    "b" releases; its turn 2: context 3,000, max_tokens 6,000 -> needs 6,000; s1 has 5,000 free, s0 none -> waits
    "d" releases (s1: 10,000 free)             -> "b" is placed on s1, its previous server (prefix cached there)

Where capacity comes from (``capacity_source``): ``config`` uses ``capacity_tokens`` for every server; ``sglang``
reads ``GET http://<server_id>/v1/loads?include=core`` (sum of ``max_total_num_tokens`` over DP ranks, and
``num_total_tokens`` as current use, waiting prompts included); ``vllm`` asks the server actor for
``num_gpu_blocks * block_size``; ``auto`` tries SGLang, then vLLM, then falls back to ``capacity_tokens``.
Readings are refreshed every ``refresh_interval_s`` and *corrected by our own reservations*: a server's used
tokens are ``max(reserved, reported_used + reserved_since_the_report)``, because the report cannot yet see the
turns we placed after it, and our reservations are an upper bound of what our own turns can use.

Layout: the logic is pure and synchronous (:func:`max_new_tokens`, :func:`reservation_tokens`,
:func:`choose_server`, :class:`CapacityScheduler`), used as-is by ``benchmarks/rollout_scheduling_sim.py``;
:class:`KVCapacityLoadBalancer` is the thin asyncio + verl protocol layer, and ``KVCapacityLoadBalancerActor``
the Ray actor class that ``router_class`` names (verl keeps an ``ActorClass`` as it is, so our
``max_concurrency`` holds: a release must never queue behind thousands of waiting acquires).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

logger = logging.getLogger(__name__)

NO_SERVERS = "No available servers in load balancer"  # verl's FullyAsyncLLMServerClient retries on this text

DEFAULTS: dict[str, Any] = {
    "capacity_tokens": 262144,  # fallback KV capacity per server (tokens) when nothing can be read
    "capacity_source": "config",  # config | sglang | vllm | auto
    "budget_coef": 0.1,  # share of max_new_tokens reserved per turn
    "default_max_new_tokens": 8192,  # when sampling_params names no max_tokens / max_new_tokens
    "stickiness_slack": 0.1,  # stay on the previous server while its free share >= best free share - slack
    "refresh_interval_s": 2.0,  # how often server-reported capacity is re-read (sglang / vllm / auto)
    "http_timeout_s": 2.0,
    "max_sticky_entries": 200_000,  # request_id -> previous server map (LRU)
    "straggler_age_s": 15.0,  # a turn in flight this long marks its server as hosting a likely straggler
    "straggler_penalty": 0.003,  # share of capacity a server looks fuller per such turn (0: off)
}
MAX_CONCURRENCY = 100_000  # the Ray actor's concurrency: above any number of turns that can wait at once


# --------------------------------------------------------------------------------------------------------------
# Pure logic


def max_new_tokens(sampling_params: Optional[Mapping[str, Any]], default: int) -> int:
    """The turn's generation limit: ``max_tokens`` (vLLM / OpenAI) or ``max_new_tokens`` (SGLang), else
    ``default``. ``{"max_tokens": 300}`` -> 300; ``{}`` -> default."""
    for key in ("max_new_tokens", "max_tokens"):
        value = (sampling_params or {}).get(key)
        if value is not None:
            return max(0, int(value))
    return max(0, int(default))


def reservation_tokens(prompt_len: int, max_new: int, budget_coef: float, n: int = 1) -> int:
    """Tokens one turn reserves: its whole context plus ``budget_coef`` of what it may generate, per sample.

    The context (``prompt_ids`` holds the prompt, earlier turns and tool outputs) is certain KV use; the
    generation is an upper bound, most turns stop well short of it, hence the coefficient.
    ``reservation_tokens(1000, 8000, 0.5)`` -> 5000; with ``n=2`` -> 10000."""
    return max(1, int(n)) * (int(prompt_len) + int(math.ceil(budget_coef * max(0, int(max_new)))))


def choose_server(free: Mapping[str, int], capacity: Mapping[str, int], need: int, previous: Optional[str],
                  stickiness_slack: float, penalty: Optional[Mapping[str, int]] = None) -> Optional[str]:
    """Where a turn needing ``need`` tokens goes, or ``None`` when no server has room (the turn must wait).

    ``need`` is clamped to each server's capacity (a turn larger than a server fits an empty one). The previous
    server wins while the turn fits there and its free share ``free/capacity`` is at least the best free share
    among fitting servers minus ``stickiness_slack`` (0: only when it is as empty as the best; 1: whenever it
    fits). Otherwise the fitting server with the most free tokens wins; ties go to the first in ``free``'s
    order, which keeps the choice deterministic. ``penalty`` (tokens per server, e.g.
    :meth:`CapacityScheduler.penalties`) is subtracted from a server's free tokens for these comparisons only;
    whether the turn fits is judged on the real free tokens.

    >>> choose_server({"s0": 3000, "s1": 9000}, {"s0": 10000, "s1": 10000}, 2000, "s0", 0.25)
    's1'
    >>> choose_server({"s0": 8000, "s1": 9000}, {"s0": 10000, "s1": 10000}, 2000, "s0", 0.25)
    's0'
    >>> choose_server({"s0": 1000, "s1": 500}, {"s0": 10000, "s1": 10000}, 2000, None, 0.25) is None
    True
    """
    penalty = penalty or {}
    best, best_free, best_share = None, -math.inf, -math.inf
    for sid, f in free.items():
        cap = capacity[sid]
        if cap <= 0 or f < min(need, cap):
            continue
        f -= penalty.get(sid, 0)
        share = f / cap
        best_share = max(best_share, share)
        if f > best_free:
            best, best_free = sid, f
    if best is None:
        return None
    if previous is not None and previous in free:
        cap = capacity[previous]
        if (cap > 0 and free[previous] >= min(need, cap)
                and (free[previous] - penalty.get(previous, 0)) / cap >= best_share - stickiness_slack):
            return previous
    return best


@dataclass
class Lease:
    """One reserved turn: ``tokens`` on ``server_id`` for ``request_id``."""

    request_id: Optional[str]
    server_id: str
    tokens: int
    seq: int


@dataclass
class Ticket:
    """A turn waiting for room; ``lease`` is set once :meth:`CapacityScheduler.drain` places it."""

    request_id: Optional[str]
    need: int
    enqueued_at: float = 0.0
    lease: Optional[Lease] = None
    payload: Any = None


@dataclass
class ServerBook:
    capacity: int
    reserved: int = 0
    reported_used: Optional[int] = None  # the server's own figure at the last refresh, if any
    reserved_since_report: int = 0
    source: str = "config"
    turns: int = 0  # leases ever granted here
    running: dict = field(default_factory=dict)  # seq -> start time of the in-flight leases, oldest first

    @property
    def inflight(self) -> int:
        return len(self.running)

    def used(self) -> int:
        if self.reported_used is None:
            return self.reserved
        return max(self.reserved, self.reported_used + self.reserved_since_report)

    def free(self) -> int:
        return max(0, self.capacity - self.used())


class CapacityScheduler:
    """The balancer's whole decision logic and accounting, synchronous and free of Ray, asyncio and I/O.

    ``submit`` places a turn at once or queues it; ``release`` returns a lease; ``drain`` places queued turns in
    arrival order (strict FIFO: a waiting head is never overtaken, which is what makes the clamp sufficient
    against starvation). Example, one server of 100 tokens::

        s = CapacityScheduler({"s0": 100}, budget_coef=1.0)
        a = s.submit("a", 60)            # Lease(s0, 60)
        t = s.submit("b", 60)            # None: queued (ticket in s.waiting)
        s.release("a", "s0")             # 60 back
        s.drain()                        # [(ticket of b, Lease(s0, 60))]
    """

    def __init__(self, capacities: Mapping[str, int], *, budget_coef: float = DEFAULTS["budget_coef"],
                 stickiness_slack: float = DEFAULTS["stickiness_slack"],
                 default_max_new_tokens: int = DEFAULTS["default_max_new_tokens"],
                 max_sticky_entries: int = DEFAULTS["max_sticky_entries"],
                 straggler_age_s: float = DEFAULTS["straggler_age_s"],
                 straggler_penalty: float = DEFAULTS["straggler_penalty"]):
        self.budget_coef = float(budget_coef)
        self.stickiness_slack = float(stickiness_slack)
        self.default_max_new_tokens = int(default_max_new_tokens)
        self.max_sticky_entries = int(max_sticky_entries)
        self.straggler_age_s = float(straggler_age_s)
        self.straggler_penalty = float(straggler_penalty)
        self.servers: dict[str, ServerBook] = {sid: ServerBook(int(cap)) for sid, cap in capacities.items()}
        self.leases: dict[Optional[str], collections.deque[Lease]] = {}
        self.previous: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.waiting: collections.deque[Ticket] = collections.deque()
        self._seq = itertools.count()
        self.stats = collections.Counter()  # acquires, waits, moves, sticky, clamped, unmatched_releases, ...
        self.wait_s = 0.0

    # sizes -----------------------------------------------------------------------------------------------------
    def need_for(self, prompt_len: int, sampling_params: Optional[Mapping[str, Any]] = None) -> int:
        n = int((sampling_params or {}).get("n", 1) or 1)
        return reservation_tokens(prompt_len, max_new_tokens(sampling_params, self.default_max_new_tokens),
                                  self.budget_coef, n)

    def free(self) -> dict[str, int]:
        return {sid: b.free() for sid, b in self.servers.items()}

    # placing ---------------------------------------------------------------------------------------------------
    def penalties(self, now: float) -> dict[str, int]:
        """Straggler protection: ``{server: tokens}`` by which each server is treated as fuller when choosing,
        ``straggler_penalty x capacity`` per in-flight turn granted at least ``straggler_age_s`` before ``now``
        (turns still running that long are the likely stragglers). Servers without such turns are absent.

        >>> s = CapacityScheduler({"a": 1000, "b": 1000}, straggler_age_s=10, straggler_penalty=0.05)
        >>> _ = s.submit("x", 100, now=0.0); _ = s.submit("y", 100, now=0.0); _ = s.submit("z", 100, now=8.0)
        >>> s.penalties(now=12.0)  # x on a, y on b are 12 s old; z (on a) only 4 s
        {'a': 50, 'b': 50}
        """
        if self.straggler_penalty <= 0:
            return {}
        out = {}
        cutoff = now - self.straggler_age_s
        for sid, b in self.servers.items():
            n = 0
            for started in b.running.values():  # oldest first
                if started > cutoff:
                    break
                n += 1
            if n:
                out[sid] = int(self.straggler_penalty * n * b.capacity)
        return out

    def _place(self, request_id: Optional[str], need: int, now: float = 0.0) -> Optional[Lease]:
        prev = self.previous.get(request_id) if request_id is not None else None
        caps = {sid: b.capacity for sid, b in self.servers.items()}
        sid = choose_server(self.free(), caps, need, prev, self.stickiness_slack, self.penalties(now))
        if sid is None:
            return None
        book = self.servers[sid]
        tokens = min(need, book.capacity)
        if tokens < need:
            self.stats["clamped"] += 1
        book.reserved += tokens
        book.turns += 1
        if book.reported_used is not None:
            book.reserved_since_report += tokens
        lease = Lease(request_id, sid, tokens, next(self._seq))
        book.running[lease.seq] = now
        self.leases.setdefault(request_id, collections.deque()).append(lease)
        self.stats["acquires"] += 1
        if prev is not None:
            self.stats["sticky" if prev == sid else "moves"] += 1
        if request_id is not None:
            self.previous[request_id] = sid
            self.previous.move_to_end(request_id)
            while len(self.previous) > self.max_sticky_entries:
                self.previous.popitem(last=False)
        return lease

    def submit(self, request_id: Optional[str], need: int, ticket: Optional[Ticket] = None,
               now: float = 0.0) -> Optional[Lease]:
        """Place a turn now, or queue ``ticket`` (made if not given) and return ``None``."""
        if not self.servers:
            raise RuntimeError(NO_SERVERS)
        if not self.waiting:
            lease = self._place(request_id, need, now)
            if lease is not None:
                return lease
        self.stats["waits"] += 1
        t = ticket or Ticket(request_id, need)
        t.enqueued_at = now
        self.waiting.append(t)
        return None

    def drain(self, now: float = 0.0) -> list[tuple[Ticket, Lease]]:
        """Place queued turns oldest first while the oldest fits somewhere."""
        placed = []
        while self.waiting and self.servers:
            head = self.waiting[0]
            lease = self._place(head.request_id, head.need, now)
            if lease is None:
                break
            self.waiting.popleft()
            head.lease = lease
            self.wait_s += max(0.0, now - head.enqueued_at)
            placed.append((head, lease))
        return placed

    def cancel(self, ticket: Ticket) -> None:
        """Forget a queued turn whose caller went away; if it was already placed, return its lease."""
        try:
            self.waiting.remove(ticket)
        except ValueError:
            pass
        if ticket.lease is not None:
            self.drop(ticket.lease)
            ticket.lease = None
            self.stats["cancelled_after_placement"] += 1

    # releasing -------------------------------------------------------------------------------------------------
    def drop(self, lease: Lease) -> None:
        """Return one lease (by identity); a lease already returned is ignored."""
        queue = self.leases.get(lease.request_id)
        if queue is not None:
            try:
                queue.remove(lease)
            except ValueError:
                return
            if not queue:
                del self.leases[lease.request_id]
        book = self.servers.get(lease.server_id)
        if book is not None:
            book.reserved -= lease.tokens
            book.running.pop(lease.seq, None)

    def release(self, request_id: Optional[str], server_id: str) -> Optional[Lease]:
        """Return the oldest lease of ``request_id`` on ``server_id`` (any server if none there; with no
        request id, the oldest lease on ``server_id``). Unknown releases are counted and ignored."""
        lease = None
        if request_id is not None:
            queue = self.leases.get(request_id, ())
            lease = next((l for l in queue if l.server_id == server_id), None) or next(iter(queue), None)
        else:
            lease = min((l for q in self.leases.values() for l in q if l.server_id == server_id),
                        key=lambda l: l.seq, default=None)
        if lease is None:
            self.stats["unmatched_releases"] += 1
            return None
        self.drop(lease)
        return lease

    # pool ------------------------------------------------------------------------------------------------------
    def add_server(self, server_id: str, capacity: int) -> None:
        if server_id not in self.servers:
            self.servers[server_id] = ServerBook(int(capacity))

    def remove_server(self, server_id: str) -> None:
        """Stop routing to ``server_id``; its leases are forgotten (their releases will be unmatched)."""
        self.servers.pop(server_id, None)
        for rid in list(self.leases):
            queue = collections.deque(l for l in self.leases[rid] if l.server_id != server_id)
            if queue:
                self.leases[rid] = queue
            else:
                del self.leases[rid]

    def set_capacity(self, server_id: str, capacity: int, used: Optional[int] = None, source: str = "config") -> None:
        """A fresh reading: total tokens, and (if the server reports it) tokens in use now."""
        book = self.servers.get(server_id)
        if book is None:
            return
        book.capacity = int(capacity)
        book.reported_used = None if used is None else int(used)
        book.reserved_since_report = 0
        book.source = source

    def inflight(self) -> int:
        return sum(len(q) for q in self.leases.values())

    def status(self) -> dict:
        books = self.servers
        return {
            "servers": {sid: b.inflight for sid, b in books.items()},
            "total_inflight": self.inflight(),
            "active_servers": len(books),
            "capacity_tokens": {sid: b.capacity for sid, b in books.items()},
            "reserved_tokens": {sid: b.reserved for sid, b in books.items()},
            "free_tokens": {sid: b.free() for sid, b in books.items()},
            "turns": {sid: b.turns for sid, b in books.items()},
            "capacity_source": {sid: b.source for sid, b in books.items()},
            "waiting": len(self.waiting),
            "waits": self.stats["waits"],
            "wait_s": round(self.wait_s, 3),
            "moves": self.stats["moves"],
            "sticky": self.stats["sticky"],
            "acquires": self.stats["acquires"],
            "clamped": self.stats["clamped"],
            "unmatched_releases": self.stats["unmatched_releases"],
            "cancelled_after_placement": self.stats["cancelled_after_placement"],
        }


def status_metrics(status: Mapping[str, Any], previous: Optional[Mapping[str, Any]] = None) -> dict[str, float]:
    """The trainer's per-step metrics from two ``get_status`` readings of our balancer (``previous``: the last
    step's, None at the first): counters as this step's increments, the spread of turns over servers, and the
    smallest free KV now. Any other balancer's status (verl's default has no ``acquires``) gives nothing.

    >>> before = {"acquires": 10, "waits": 1, "wait_s": 0.5, "moves": 2, "sticky": 6, "clamped": 0,
    ...           "turns": {"a": 5, "b": 5}, "free_tokens": {"a": 900, "b": 800}}
    >>> after = {"acquires": 30, "waits": 4, "wait_s": 2.0, "moves": 3, "sticky": 20, "clamped": 1,
    ...          "turns": {"a": 17, "b": 13}, "free_tokens": {"a": 1000, "b": 1000}}
    >>> status_metrics(after, before)["router/turns_max_over_mean"], status_metrics(after, before)["router/waits"]
    (1.2, 3.0)
    """
    if "acquires" not in status:
        return {}
    previous = previous or {}

    def delta(key: str) -> float:
        return float(status.get(key, 0)) - float(previous.get(key, 0))

    turns = {sid: n - (previous.get("turns") or {}).get(sid, 0) for sid, n in (status.get("turns") or {}).items()}
    acquires = delta("acquires")
    mean_turns = sum(turns.values()) / len(turns) if turns else 0.0
    free = list((status.get("free_tokens") or {}).values())
    return {"router/turns": acquires, "router/waits": delta("waits"), "router/wait_s": delta("wait_s"),
            "router/moves": delta("moves"), "router/clamped": delta("clamped"),
            "router/sticky_ratio": delta("sticky") / acquires if acquires else 0.0,
            "router/turns_max_over_mean": max(turns.values()) / mean_turns if mean_turns else 0.0,
            "router/free_tokens_min": float(min(free)) if free else 0.0}


# --------------------------------------------------------------------------------------------------------------
# Capacity readers (small on purpose: one HTTP GET, one actor call)


async def read_sglang_loads(server_id: str, timeout_s: float = 2.0) -> tuple[int, int]:
    """``(max_total_num_tokens, num_total_tokens)`` summed over DP ranks from SGLang's ``/v1/loads``."""
    import httpx

    async with httpx.AsyncClient(timeout=timeout_s) as client:
        resp = await client.get(f"http://{server_id}/v1/loads", params={"include": "core"})
        resp.raise_for_status()
        loads = resp.json()["loads"]
    total = sum(int(l["max_total_num_tokens"]) for l in loads)
    used = sum(int(l.get("num_total_tokens", l.get("num_used_tokens", 0))) for l in loads)
    if total <= 0:
        raise ValueError(f"{server_id} reports no KV capacity")
    return total, used


def _vllm_cache_tokens(server) -> int:  # runs inside the vLLM server actor
    cache = server.engine.vllm_config.cache_config
    return int(cache.num_gpu_blocks) * int(cache.block_size)


async def read_vllm_capacity(handle, timeout_s: float = 2.0) -> int:
    """``num_gpu_blocks * block_size`` of a verl vLLM server actor (Ray's ``__ray_call__``)."""
    tokens = await asyncio.wait_for(handle.__ray_call__.remote(_vllm_cache_tokens), timeout_s)
    if tokens <= 0:
        raise ValueError("vLLM reports no KV blocks")
    return tokens


# --------------------------------------------------------------------------------------------------------------
# verl protocol layer


class KVCapacityLoadBalancer:
    """verl 0.9.1 ``RequestLoadBalancer``: ``cls(servers, config)`` with ``servers = {"ip:port": handle}`` and
    ``config`` the router YAML as a dict (``router_class`` and the knobs of :data:`DEFAULTS`).

    ``acquire_server`` is a coroutine (Ray then runs the actor on one asyncio loop, where the other methods run
    too, so no locking is needed); everything else is synchronous."""

    def __init__(self, servers: Mapping[str, Any], config: Optional[Mapping[str, Any]] = None):
        unknown = set(config or {}) - set(DEFAULTS) - {"router_class"}
        if unknown:
            raise ValueError(f"unknown router settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        self.config = {**DEFAULTS, **{k: v for k, v in (config or {}).items() if v is not None}}
        if self.config["capacity_source"] not in ("config", "sglang", "vllm", "auto"):
            raise ValueError(f"capacity_source must be config, sglang, vllm or auto, not {self.config['capacity_source']!r}")
        self._handles: dict[str, Any] = dict(servers)
        self._fallback = int(self.config["capacity_tokens"])
        self.scheduler = CapacityScheduler(
            {sid: self._fallback for sid in self._handles}, budget_coef=self.config["budget_coef"],
            stickiness_slack=self.config["stickiness_slack"],
            default_max_new_tokens=self.config["default_max_new_tokens"],
            max_sticky_entries=self.config["max_sticky_entries"],
            straggler_age_s=self.config["straggler_age_s"],
            straggler_penalty=self.config["straggler_penalty"])
        self._last_refresh = -math.inf
        self._refreshed_once = False
        self._refreshing: Optional[asyncio.Task] = None

    # verl protocol ---------------------------------------------------------------------------------------------
    def require_acquire_fields(self) -> list[str]:
        return ["prompt_ids", "sampling_params"]

    def require_release_fields(self) -> list[str]:
        return ["request_id"]

    async def acquire_server(self, request_id: str, prompt_ids: Optional[list] = None,
                             sampling_params: Optional[Mapping[str, Any]] = None, **_: Any) -> tuple[str, Any]:
        if not self.scheduler.servers:
            raise RuntimeError(NO_SERVERS)
        await self._maybe_refresh()
        need = self.scheduler.need_for(len(prompt_ids or ()), sampling_params)
        loop = asyncio.get_running_loop()
        ticket = Ticket(request_id, need, payload=loop.create_future())
        lease = self.scheduler.submit(request_id, need, ticket, now=time.monotonic())
        if lease is None:
            try:
                lease = await ticket.payload  # set by _wake() when a release or refresh makes room
            except BaseException:  # cancelled, or the pool emptied: return what may have been placed
                self.scheduler.cancel(ticket)
                self._wake()
                raise
        return lease.server_id, self._handles[lease.server_id]

    def release_server(self, server_id: str, request_id: Optional[str] = None) -> None:
        self.scheduler.release(request_id, server_id)
        self._wake()

    def add_servers(self, servers: Mapping[str, Any]) -> None:
        for sid, handle in servers.items():
            self._handles[sid] = handle
            self.scheduler.add_server(sid, self._fallback)
        self._last_refresh = -math.inf  # read the newcomers' capacity on the next acquire
        self._wake()

    def remove_servers(self, server_ids: Iterable[str]) -> None:
        for sid in server_ids:
            self._handles.pop(sid, None)
            self.scheduler.remove_server(sid)
        if not self.scheduler.servers:  # waiters would wait forever: fail them as verl's empty pool does
            for t in list(self.scheduler.waiting):
                if not t.payload.done():
                    t.payload.set_exception(RuntimeError(NO_SERVERS))
            self.scheduler.waiting.clear()
        self._wake()

    def get_all_servers(self) -> list[str]:
        return list(self.scheduler.servers)

    def get_status(self) -> dict:
        status = self.scheduler.status()
        status["registered_handles"] = list(self._handles)
        return status

    def clear_sticky_cache(self) -> dict:
        cleared = len(self.scheduler.previous)
        self.scheduler.previous.clear()
        return {"cleared_entries": cleared, "server_loads": dict(self.scheduler.status()["servers"])}

    def get_total_inflight(self) -> int:
        return self.scheduler.inflight()

    # internals -------------------------------------------------------------------------------------------------
    def _wake(self) -> None:
        """Hand freed room to waiting turns, oldest first (each waiter's future is resolved with its lease)."""
        for ticket, lease in self.scheduler.drain(now=time.monotonic()):
            fut = ticket.payload
            if fut.done():  # its caller is gone: give the room back
                self.scheduler.drop(lease)
                ticket.lease = None
                continue
            fut.set_result(lease)

    async def _maybe_refresh(self) -> None:
        if self.config["capacity_source"] == "config":
            return
        if time.monotonic() - self._last_refresh < float(self.config["refresh_interval_s"]):
            return
        if self._refreshing is None or self._refreshing.done():
            self._last_refresh = time.monotonic()
            self._refreshing = asyncio.ensure_future(self.refresh_capacity())
        if not self._refreshed_once:
            await asyncio.shield(self._refreshing)  # the first reading is worth waiting for; later ones run behind

    async def refresh_capacity(self) -> dict[str, str]:
        """Re-read every server's capacity; returns ``{server_id: source}`` (``config`` where nothing answered)."""
        source = self.config["capacity_source"]
        timeout = float(self.config["http_timeout_s"])

        async def one(sid: str) -> tuple[str, Optional[int], Optional[int], str]:
            if source in ("sglang", "auto"):
                try:
                    total, used = await read_sglang_loads(sid, timeout)
                    return sid, total, used, "sglang"
                except Exception as exc:  # noqa: BLE001 - an unreadable server keeps its last capacity
                    logger.debug("sglang loads of %s: %s", sid, exc)
            if source in ("vllm", "auto"):
                try:
                    return sid, await read_vllm_capacity(self._handles[sid], timeout), None, "vllm"
                except Exception as exc:  # noqa: BLE001
                    logger.debug("vllm capacity of %s: %s", sid, exc)
            return sid, None, None, "config"

        results = await asyncio.gather(*(one(sid) for sid in list(self.scheduler.servers)))
        self._refreshed_once = True
        for sid, total, used, src in results:
            if total is not None:
                self.scheduler.set_capacity(sid, total, used, src)
        self._wake()
        return {sid: self.scheduler.servers[sid].source for sid, *_ in results if sid in self.scheduler.servers}


_ACTOR_CLASS = None


def __getattr__(name: str):
    """``KVCapacityLoadBalancerActor``: the Ray actor class the router YAML names, made on first use so that
    importing the pure logic (the simulator does) does not import Ray."""
    global _ACTOR_CLASS
    if name == "KVCapacityLoadBalancerActor":
        if _ACTOR_CLASS is None:
            import ray

            _ACTOR_CLASS = ray.remote(max_concurrency=MAX_CONCURRENCY)(KVCapacityLoadBalancer)
        return _ACTOR_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
