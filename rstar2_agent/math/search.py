"""Lock-step tree search over a batch of questions: MCTS (terminal-guided or PPM-augmented), step beam
search, and greedy (the ``sft_eval_greedy`` config through MCTS mode).

Why lock-step: a search is thousands of short generations, code runs and PPM scores. Upstream batches the
LLM and PPM calls across the questions of a batch; ours does the same for all three. Each *round* every
unfinished tree contributes its node(s) to expand, and the round makes exactly ONE call to each interface:

* ``generator.generate(prompts, n, params) -> list[list[Continuation]]`` (n continuations per prompt);
* ``executor.run(codes) -> list[str]`` (one observation per code; one code-judge batch);
* ``value_model.score(texts) -> list[float]`` (PPM values; only when ``need_value_func``).

(A round whose new nodes hold no code, or that needs no value, skips that call.)

**MCTS round** for one tree (``iterations`` rollouts; ``step_beam_width`` is ignored, i.e. 1):

1. from the rollout's current node (the root when a rollout starts), descend to the best non-terminal child
   (:func:`~rstar2_agent.math.tree.select_child`) while the node is already expanded;
2. expand it by ``n_generate_sample`` continuations, de-duplicated (:func:`dedupe`);
3. run the code of the python children, apply the observation and the depth rule (:mod:`.steps`);
4. evaluate the children (:func:`evaluate_mcts_child`): a valid answer back-propagates
   ``positive_reward``/``negative_reward`` by correctness when ``is_sampling``, else its PPM value; an
   invalid terminal gets ``negative_reward`` on itself only; with ``need_value_func`` and
   ``update_leaf_value`` (and not ``terminal_sample``) an open child gets its PPM value as initial Q;
5. the next round continues from the best child of the node just expanded; a rollout ends when no
   non-terminal child is left, and the next one starts at the root.

**Beam round** for one tree (upstream's ``BS``): expand every beam node, score all children with the PPM, keep
the ``step_beam_width - len(final answers)`` best by value; of those, valid answers move to the tree's final
answers (each one shrinks later beams), invalid terminals are dropped (any code error is terminal in beam
search) and the open ones are the next beam. An answer ranked below the kept children is not taken: a
low-valued guess sampled beside a promising step does not end the search.

Example (terminal-guided, ground truth 4): the root expands into a correct ``\\boxed{4}`` and a wrong
``\\boxed{5}`` (neither stopped on ``<end_of_answer>``, so both are kept): ``0.1`` gets Q +1, ``0.2`` Q -1,
the root has 2 visits and Q 0; both children are terminal, so the root is exhausted and the search ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence

from rstar2_agent.math import steps
from rstar2_agent.math.config import SearchConfig
from rstar2_agent.math.prompts import load_few_shots, load_template, partial_solution, question_prompt
from rstar2_agent.math.steps import Continuation
from rstar2_agent.math.tree import Node, select_child
from rstar2_agent.reward.scoring import compute_score

__all__ = ["Generator", "Executor", "ValueModel", "SearchTree", "SearchStats", "dedupe", "is_correct",
           "sampling_params", "make_trees", "mcts_round", "beam_round", "search_batch", "run_search",
           "evaluate_mcts_child", "best_answer"]


class Generator(Protocol):
    def generate(self, prompts: list[str], n: int, params: dict) -> list[list[Continuation]]: ...


class Executor(Protocol):
    def run(self, codes: list[str]) -> list[str]: ...


class ValueModel(Protocol):
    def score(self, texts: list[str]) -> list[float]: ...


@dataclass
class SearchTree:
    """One question's search: its tree and where its search stands."""

    item: dict
    prompt: str
    root: Node
    current: Optional[Node] = None  # MCTS: where the running rollout continues
    rollouts: int = 0  # MCTS: finished rollouts
    # MCTS: after each rollout, (final answer, Q) of every valid terminal, for per-rollout metrics
    rollout_answers: list[list[tuple[str, float]]] = field(default_factory=list)
    beam: list[Node] = field(default_factory=list)  # beam search: the open nodes
    final_nodes: list[Node] = field(default_factory=list)  # beam search: valid answers found
    done: bool = False

    @property
    def question(self) -> str:
        return str(self.item["question"])

    @property
    def answer(self) -> Any:
        return self.item.get("answer")


@dataclass
class SearchStats:
    """Counters for progress and tests: rounds, interface calls, nodes and tokens."""

    rounds: int = 0
    generate_calls: int = 0
    run_calls: int = 0
    score_calls: int = 0
    nodes: int = 0
    tokens: int = 0
    codes: int = 0


def dedupe(conts: Sequence[Continuation]) -> list[Continuation]:
    """Drop repeated steps (same text and stop); if any stopped on ``<end_of_answer>``, keep only the first
    such one (upstream: a finished answer ends the expansion)."""
    answers = [c for c in conts if c.stop_reason == steps.ANSWER_END]
    if answers:
        return [answers[0]]
    seen, out = set(), []
    for c in conts:
        key = steps.step_text(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def is_correct(answer: str, ground_truth: Any) -> bool:
    """Our reward's equivalence check (normalising grader + math-verify); a list passes if any item does."""
    truths = ground_truth if isinstance(ground_truth, (list, tuple)) else [ground_truth]
    return any(compute_score("\\boxed{" + str(answer) + "}", str(t)) == 1.0 for t in truths if t is not None)


def sampling_params(cfg: SearchConfig) -> dict:
    """The generation parameters of a search (vLLM's names)."""
    return {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k, "best_of": cfg.best_of,
            "max_tokens": cfg.max_tokens, "stop": list(cfg.stop or []), "seed": cfg.seed}


def make_trees(items: Iterable[dict], cfg: SearchConfig) -> list[SearchTree]:
    """One tree per question item (``question``/``answer``), its root ready for the first round."""
    template, shots = load_template(cfg.prompt_path), load_few_shots(cfg.few_shot_path, cfg.num_few_shot)
    trees = []
    for item in items:
        root = Node(c_puct=cfg.c_puct)
        tree = SearchTree(item=item, prompt=question_prompt(str(item["question"]), template, shots), root=root,
                          current=root, beam=[root])
        trees.append(tree)
    return trees


# ---------------------------------------------------------------------- shared expansion machinery

def _expand(pairs: list[tuple[SearchTree, Node]], cfg: SearchConfig, generator: Generator, executor: Executor,
            value_model: Optional[ValueModel], stats: SearchStats, errors_threshold: int
            ) -> list[tuple[SearchTree, Node]]:
    """Expand every (tree, node) with one generate call and (when any child holds code) one run call.

    Returns the new children with their tree, observations and terminal rules applied; ``_score`` values them.
    """
    prompts = [tree.prompt + partial_solution(node, cfg.step_delim) for tree, node in pairs]
    outputs = generator.generate(prompts, cfg.n_generate_sample, sampling_params(cfg))
    stats.generate_calls += 1
    if len(outputs) != len(prompts):
        raise RuntimeError(f"generator returned {len(outputs)} results for {len(prompts)} prompts")
    children: list[tuple[SearchTree, Node]] = []
    for (tree, node), conts in zip(pairs, outputs):
        for cont in dedupe(conts):
            stats.tokens += cont.num_tokens
            parsed = steps.parse_step(steps.step_text(cont))
            terminal = parsed.pop("terminal")
            child = node.add_child(parsed)
            child.is_terminal = terminal
            children.append((tree, child))
    stats.nodes += len(children)
    python = [child for _, child in children if child.state["action"] == steps.PYTHON_ACTION]
    codes = [steps.step_code(child) for child in python]
    runnable = [i for i, code in enumerate(codes) if code.strip()]
    observations = [""] * len(python)  # a step without code observes nothing (no judge call for it)
    if runnable:
        for i, obs in zip(runnable, executor.run([codes[i] for i in runnable]), strict=True):
            observations[i] = obs
        stats.run_calls += 1
        stats.codes += len(runnable)
    for child, obs in zip(python, observations):
        steps.apply_observation(child, obs, errors_threshold)
    for _, child in children:
        steps.apply_depth_limit(child, cfg.max_depth)
    return children


def _score(children: list[tuple[SearchTree, Node]], cfg: SearchConfig, value_model: Optional[ValueModel],
           stats: SearchStats) -> list[Optional[float]]:
    """PPM values of the new children (one call), or None each when the search uses no value function."""
    if not cfg.need_value_func or not children:
        return [None] * len(children)
    texts = [tree.prompt + partial_solution(child, cfg.step_delim) for tree, child in children]
    values = value_model.score(texts)
    stats.score_calls += 1
    return [float(v) for v in values]


# ---------------------------------------------------------------------- MCTS

def evaluate_mcts_child(child: Node, ppm_value: Optional[float], ground_truth: Any, cfg: SearchConfig) -> None:
    """Upstream's evaluation of a new MCTS node (see the module docstring, step 4)."""
    if child.is_terminal:
        if not child.is_valid_leaf():
            child.update(cfg.negative_reward)
        elif cfg.is_sampling:
            good = is_correct(child.state["final_answer"], ground_truth)
            child.update_recursive(cfg.positive_reward if good else cfg.negative_reward)
        elif ppm_value is not None:
            child.update_recursive(ppm_value)
        return
    if ppm_value is not None:
        if cfg.update_leaf_value and not cfg.terminal_sample:
            child.update(ppm_value)
        else:
            child.value = ppm_value


def _leaf_to_expand(tree: SearchTree) -> Optional[Node]:
    """Descend from the rollout's current node to an unexpanded one; None if the rollout cannot go on."""
    node = tree.current or tree.root
    while node.children:
        nxt = select_child(node)
        if nxt is None:
            return None
        node = nxt
    return None if node.is_terminal else node


def _end_rollout(tree: SearchTree, cfg: SearchConfig) -> None:
    tree.rollouts += 1
    tree.rollout_answers.append([(n.state["final_answer"], n.q_value) for n in tree.root.walk() if n.is_valid_leaf()])
    tree.current = tree.root
    if tree.rollouts >= cfg.iterations or tree.root.is_terminal:
        tree.done = True


def mcts_round(trees: Sequence[SearchTree], cfg: SearchConfig, generator: Generator, executor: Executor,
               value_model: Optional[ValueModel] = None, stats: Optional[SearchStats] = None) -> None:
    """One lock-step MCTS round over every unfinished tree."""
    stats = stats if stats is not None else SearchStats()
    pairs = []
    for tree in trees:
        while not tree.done:
            leaf = _leaf_to_expand(tree)
            if leaf is not None:
                pairs.append((tree, leaf))
                break
            _end_rollout(tree, cfg)  # nothing left to expand on this path
    if not pairs:
        return
    stats.rounds += 1
    children = _expand(pairs, cfg, generator, executor, value_model, stats, cfg.errors_threshold)
    values = _score(children, cfg, value_model, stats)
    for (tree, child), value in zip(children, values):
        evaluate_mcts_child(child, value, tree.answer, cfg)
    for tree, node in pairs:
        nxt = select_child(node) if node.children else None
        if nxt is None:
            _end_rollout(tree, cfg)
        else:
            tree.current = nxt


# ---------------------------------------------------------------------- step beam search

def beam_round(trees: Sequence[SearchTree], cfg: SearchConfig, generator: Generator, executor: Executor,
               value_model: Optional[ValueModel] = None, stats: Optional[SearchStats] = None) -> None:
    """One lock-step beam-search round over every unfinished tree."""
    stats = stats if stats is not None else SearchStats()
    pairs = [(tree, node) for tree in trees if not tree.done for node in tree.beam]
    if not pairs:
        for tree in trees:
            tree.done = True
        return
    stats.rounds += 1
    children = _expand(pairs, cfg, generator, executor, value_model, stats, errors_threshold=1)
    values = _score(children, cfg, value_model, stats)
    by_tree: dict[int, list[Node]] = {}
    for (tree, child), value in zip(children, values):
        child.update(value if value is not None else 0.0)
        by_tree.setdefault(id(tree), []).append(child)
    for tree in trees:
        if tree.done:
            continue
        ranked = sorted(by_tree.get(id(tree), []), key=lambda c: c.value, reverse=True)
        kept = ranked[: max(cfg.step_beam_width - len(tree.final_nodes), 0)]
        tree.final_nodes.extend(c for c in kept if c.is_valid_leaf())
        tree.beam = [c for c in kept if not c.is_terminal]
        if not tree.beam:
            tree.done = True
    for tree in trees:
        tree.final_nodes.sort(key=lambda c: c.value, reverse=True)


# ---------------------------------------------------------------------- driver

def search_batch(trees: Sequence[SearchTree], cfg: SearchConfig, generator: Generator, executor: Executor,
                 value_model: Optional[ValueModel] = None, stats: Optional[SearchStats] = None,
                 on_done: Optional[Callable[[SearchTree], None]] = None,
                 on_rollout: Optional[Callable[[SearchTree, int], None]] = None) -> list[SearchTree]:
    """Run rounds until every tree is done; ``on_done(tree)`` is called as each tree finishes and
    ``on_rollout(tree, k)`` after its MCTS rollout k (1-based; two rollouts that end in the same round see the
    same tree, which did not change between them)."""
    if cfg.need_value_func and value_model is None:
        raise ValueError("need_value_func is set but no value model (PPM, --reward_model_dir) was given")
    stats = stats if stats is not None else SearchStats()
    step = beam_round if cfg.mode == "bs" else mcts_round
    reported: set[int] = set()
    snapshots = {id(tree): 0 for tree in trees}
    while True:
        step(trees, cfg, generator, executor, value_model, stats)
        for tree in trees:
            if on_rollout is not None:
                for k in range(snapshots[id(tree)] + 1, tree.rollouts + 1):
                    on_rollout(tree, k)
                snapshots[id(tree)] = tree.rollouts
            if tree.done and id(tree) not in reported:
                reported.add(id(tree))
                if on_done is not None:
                    on_done(tree)
        if all(tree.done for tree in trees):
            return list(trees)


def run_search(items: Sequence[dict], cfg: SearchConfig, generator: Generator, executor: Executor,
               value_model: Optional[ValueModel] = None, stats: Optional[SearchStats] = None,
               on_done: Optional[Callable[[SearchTree], None]] = None,
               on_rollout: Optional[Callable[[SearchTree, int], None]] = None) -> list[SearchTree]:
    """Search every item, ``batch_size`` questions at a time (-1: all together)."""
    size = len(items) if cfg.batch_size == -1 else cfg.batch_size
    out: list[SearchTree] = []
    for start in range(0, len(items), max(size, 1)):
        trees = make_trees(items[start:start + size], cfg)
        out.extend(search_batch(trees, cfg, generator, executor, value_model, stats, on_done, on_rollout))
    return out


def best_answer(tree: SearchTree) -> Optional[Node]:
    """The valid terminal with the highest Q (upstream ``eval_output.py``); beam search: the best-valued."""
    if tree.final_nodes:
        return tree.final_nodes[0]
    leaves = [n for n in tree.root.walk() if n.is_valid_leaf()]
    return max(leaves, key=lambda n: n.q_value, default=None)

