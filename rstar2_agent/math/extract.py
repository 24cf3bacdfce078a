"""Training data from search trees: SFT traces for the policy and step-level preference pairs for the PPM.

The input is search output in the upstream tree format (ours and upstream's, :mod:`.records`): one JSONL line
per question with ``question`` (or ``query``), ``answer`` and ``rstar`` (every node by tag). Everything here is
a pure function of the trees; the CLI (``rstar2-agent math extract-sft|extract-pairs``) only reads and writes.

**Pruning** (:func:`prune`): a subtree that holds no valid final answer (only failure terminals: code errors,
depth limit, unparsable steps) is dropped; a tree left without any valid answer gives no data at all.

**SFT traces** (:func:`sft_examples`, upstream ``extra_sft_file.py`` + ``sample_sft_data.py``): every
root-to-leaf trace whose leaf holds a valid answer equal to the ground truth (our reward's equivalence check)
is a candidate. Per question, over every tree given for it, the candidates are ranked by (mean Q, min Q) of
their steps, highest first; traces whose text contains "error" (any case) are skipped and the first ``n``
(default 2) distinct responses are kept. Output ``{query, response}``: the question and the steps joined by
``step_delim`` (exactly what the search generated after the prompt). Upstream cuts to ``n`` *before*
dropping the "error" traces and so may keep fewer than ``n``; ours keeps up to ``n`` error-free ones.

**Preference pairs** (:func:`tree_pairs` + :func:`keep_pair`, upstream ``extra_rm_file.py`` +
``sample_rm_data.py``):

1. leaves are marked (:func:`mark_outcomes`): *correct* if a valid answer with Q == ``positive`` (1),
   *wrong* if a valid answer with Q == ``negative`` (-1); a code-error terminal is neither. Each node counts
   the correct and wrong leaves below it.
2. Breadth first from the root, at each node: ``chosen`` = children with a correct leaf below, by Q highest
   first, the first ``top_k`` (2); ``rejected`` = children with a wrong leaf below, by Q lowest first, the
   first ``top_k``. No pair when either is empty. When one side has a single node, the other side takes up to
   ``one_sided_k`` (4). ``pos_count`` / ``neg_count`` are the sizes of the two sides.
3. Every (chosen, rejected) combination is a candidate when ``Q_c - Q_r > 0`` (the step margin) and the mean
   Q of the chosen node's best path (down through its highest-Q children with a correct leaf) is above that of
   the rejected node's worst path (down through its lowest-Q children with a wrong leaf).
4. The search goes on into every child with both a correct and a wrong leaf below (``mode="all"``; upstream's
   ``"vis_count"``: only the most visited such child).
5. Filters: ``step_margin >= 0.5`` and ``edit_distance(pos, neg) >= 20`` (characters).

Output ``{prompt, pos, neg, pos_count, neg_count}``: ``prompt`` is the question prompt (:mod:`.prompts`) plus
the partial solution down to the node, ``pos``/``neg`` the two steps, each step followed by ``step_delim``, so
``prompt + pos`` is exactly the text the search asks the PPM to score for that child.

Worked example (Q in brackets, ``+`` a correct answer, ``-`` a wrong one, ``E`` a code-error terminal)::

    0
    |- 0.1 [0.5]  |- 0.1.1 + [1]          at 0:   chosen [0.1], rejected [0.2, 0.1] (one-sided: up to 4)
    |             `- 0.1.2 - [-1]                 (0.1, 0.2): margin 1.1, paths 0.75 > -0.8 -> a pair (1, 2)
    |- 0.2 [-0.6] `- 0.2.1 - [-1]                 (0.1, 0.1): margin 0 -> none
    `- 0.3 E [-1]                         at 0.1: (0.1.1, 0.1.2): margin 2 -> a pair (1, 1)

and the SFT traces of the same tree (ground truth = the ``+`` answer): only ``0.1 -> 0.1.1``.
"""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Iterable, Optional, Sequence

from rstar2_agent.math.prompts import SFT_PROMPT, partial_solution, question_prompt
from rstar2_agent.math.records import read_records, rebuild_tree
from rstar2_agent.math.tree import Node

__all__ = ["SFT_DEFAULTS", "PAIR_DEFAULTS", "SFT_KEYS", "PAIR_KEYS", "load_tree_records", "record_question",
           "prune", "is_answer_leaf", "leaf_traces", "trace_q_stats", "correct_traces", "sft_examples",
           "mark_outcomes", "extreme_path_mean", "choose_sides", "tree_pairs", "edit_distance", "keep_pair",
           "extract_pairs", "read_rows", "write_rows", "add_commands"]

SFT_DEFAULTS = {"n": 2, "step_delim": "\n"}
PAIR_DEFAULTS = {"top_k": 2, "one_sided_k": 4, "step_margin": 0.5, "min_edit_distance": 20, "mode": "all",
                 "positive": 1.0, "negative": -1.0, "step_delim": "\n"}
SFT_KEYS = ("query", "response")
PAIR_KEYS = ("prompt", "pos", "neg", "pos_count", "neg_count")


# ---------------------------------------------------------------------- reading trees

def _line_of(path: Path, index: int) -> int:
    """The 1-based line of the ``index``-th record :func:`read_records` returned (for error messages only)."""
    seen = -1
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        seen += 1
        if seen == index:
            return number
    return index + 1


def load_tree_records(path: str | Path) -> list[dict]:
    """The tree lines of a search output (:func:`.records.read_records`), each checked for ``rstar`` with a
    root ``"0"`` and a ``question``/``query``; a bad line or an empty file raises ValueError naming both."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such tree file")
    records = read_records(path)
    if not records:
        raise ValueError(f"{path}: no tree records (empty file, or no complete JSON line)")
    for i, record in enumerate(records):
        where = f"{path}:{_line_of(path, i)}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: a tree line must be a JSON object, got {type(record).__name__}")
        if not isinstance(record.get("rstar"), dict) or "0" not in record["rstar"]:
            raise ValueError(f"{where}: no 'rstar' tree with a root node '0' (is this a search output?)")
        if "question" not in record and "query" not in record:
            raise ValueError(f"{where}: no 'question' (or 'query') field")
    return records


def record_question(record: dict) -> str:
    """The question of a tree line (upstream writes ``question``; some files use ``query``)."""
    return str(record["question"] if "question" in record else record["query"])


# ---------------------------------------------------------------------- tree shape

def is_answer_leaf(node: Node) -> bool:
    """A leaf holding a real answer (not a failure message); upstream ``is_valid_final_answer_node``."""
    return not node.children and node.is_valid_leaf()


def prune(node: Node) -> bool:
    """Drop, in place, every subtree without a valid answer leaf; True if ``node`` keeps one.

    >>> from rstar2_agent.math.tree import new_state
    >>> root = Node(); ok = root.add_child(new_state(final_answer="4")); bad = root.add_child()
    >>> ok.is_terminal = True
    >>> prune(root), [c.tag for c in root.children]
    (True, ['0.1'])
    """
    if not node.children:
        return is_answer_leaf(node)
    node.children = [child for child in node.children if prune(child)]
    return bool(node.children)


def leaf_traces(root: Node) -> list[list[Node]]:
    """Every root-to-leaf path, the root left out (it holds no step), in depth-first order."""
    return [leaf.path()[1:] for leaf in root.walk() if not leaf.children and leaf is not root]


def trace_q_stats(trace: Sequence[Node]) -> tuple[float, float]:
    """(mean Q, min Q) of a trace's steps: the SFT ranking key.

    >>> trace_q_stats([Node(visit_count=2, value_sum=1.0), Node(visit_count=1, value_sum=1.0)])
    (0.75, 0.5)
    """
    qs = [n.q_value for n in trace]
    return (sum(qs) / len(qs), min(qs)) if qs else (0.0, 1.0)


def trace_text(trace: Sequence[Node], step_delim: str = "\n") -> str:
    """The steps of a trace joined by ``step_delim``: what the search generated after the prompt."""
    return step_delim.join(n.state["text"] for n in trace)


# ---------------------------------------------------------------------- SFT traces

def correct_traces(record: dict, step_delim: str = "\n", do_prune: bool = True) -> list[tuple[str, float, float]]:
    """(response, mean Q, min Q) of each trace of one tree ending in a correct answer."""
    from rstar2_agent.math.search import is_correct

    root = rebuild_tree(record)
    if do_prune and not prune(root):
        return []
    graded: dict[str, bool] = {}  # a tree repeats its answers: grade each distinct one once
    out = []
    for trace in leaf_traces(root):
        leaf = trace[-1]
        if not is_answer_leaf(leaf):
            continue
        answer = leaf.state["final_answer"]
        if answer not in graded:
            graded[answer] = is_correct(answer, record.get("answer"))
        if graded[answer]:
            out.append((trace_text(trace, step_delim), *trace_q_stats(trace)))
    return out


def sft_examples(records: Iterable[dict], n: int = 2, step_delim: str = "\n",
                 do_prune: bool = True) -> list[dict]:
    """``{query, response}``: per question (all its trees together) the ``n`` best correct, error-free traces.

    Ranked by (mean Q, min Q), highest first; a response containing "error" (any case) is skipped, and so is a
    response already taken for that question. Questions keep their first-seen order.
    """
    pooled: dict[str, list[tuple[str, float, float]]] = {}
    for record in records:
        pooled.setdefault(record_question(record), []).extend(correct_traces(record, step_delim, do_prune))
    rows = []
    for question, candidates in pooled.items():
        taken: list[str] = []
        for response, _, _ in sorted(candidates, key=lambda c: (c[1], c[2]), reverse=True):
            if len(taken) >= n:
                break
            if "error" in response.lower() or response in taken:
                continue
            taken.append(response)
        rows.extend({"query": question, "response": r} for r in taken)
    return rows


# ---------------------------------------------------------------------- preference pairs

def mark_outcomes(root: Node, positive: float = 1.0, negative: float = -1.0) -> dict[str, tuple[int, int]]:
    """Tag -> (correct leaves, wrong leaves) in each node's subtree.

    A valid answer leaf with Q == ``positive`` is correct, with Q == ``negative`` wrong; anything else
    (code-error or other failure terminals, PPM-valued leaves) counts as neither.
    """
    counts: dict[str, tuple[int, int]] = {}

    def visit(node: Node) -> tuple[int, int]:
        correct = wrong = 0
        if is_answer_leaf(node):
            correct = int(math.isclose(node.q_value, positive, abs_tol=1e-9))
            wrong = int(math.isclose(node.q_value, negative, abs_tol=1e-9))
        for child in node.children:
            c, w = visit(child)
            correct, wrong = correct + c, wrong + w
        counts[node.tag] = (correct, wrong)
        return correct, wrong

    visit(root)
    return counts


def extreme_path_mean(node: Node, counts: dict[str, tuple[int, int]], best: bool) -> float:
    """Mean Q along the path from ``node`` down through, at each level, the highest-Q child with a correct leaf
    below (``best``) or the lowest-Q child with a wrong leaf below (not ``best``)."""
    side = 0 if best else 1
    qs = [node.q_value]
    while True:
        options = [c for c in node.children if counts[c.tag][side] > 0]
        if not options:
            return sum(qs) / len(qs)
        node = max(options, key=lambda c: c.q_value) if best else min(options, key=lambda c: c.q_value)
        qs.append(node.q_value)


def choose_sides(node: Node, counts: dict[str, tuple[int, int]], top_k: int = 2,
                 one_sided_k: int = 4) -> tuple[list[Node], list[Node]]:
    """(chosen, rejected) children of ``node``; both empty when one side has no candidate.

    A child with both a correct and a wrong leaf below is a candidate on both sides (the pair of a node with
    itself has margin 0 and is never kept). Sorting is stable: equal Q keeps child order.
    """
    chosen_all = sorted((c for c in node.children if counts[c.tag][0] > 0), key=lambda c: -c.q_value)
    rejected_all = sorted((c for c in node.children if counts[c.tag][1] > 0), key=lambda c: c.q_value)
    chosen, rejected = chosen_all[:top_k], rejected_all[:top_k]
    if not chosen or not rejected:
        return [], []
    if len(chosen) == 1:
        rejected = rejected_all[:one_sided_k]
    if len(rejected) == 1:
        chosen = chosen_all[:one_sided_k]
    return chosen, rejected


def tree_pairs(record: dict, top_k: int = 2, one_sided_k: int = 4, mode: str = "all", positive: float = 1.0,
               negative: float = -1.0, step_delim: str = "\n", template: str = SFT_PROMPT,
               do_prune: bool = True) -> list[dict]:
    """The candidate pairs of one tree (steps 1-4 of the module docstring), before the filters.

    Each pair: ``prompt``, ``pos``, ``neg``, ``pos_count``, ``neg_count``, plus ``step_margin`` (Q_c - Q_r),
    ``path_margin`` and the two tags (``pos_tag``, ``neg_tag``) for inspection.
    """
    if mode not in ("all", "vis_count"):
        raise ValueError(f"mode must be 'all' or 'vis_count', not {mode!r}")
    root = rebuild_tree(record)
    if do_prune and not prune(root):
        return []
    counts = mark_outcomes(root, positive, negative)
    prompt = question_prompt(record_question(record), template)
    pairs: list[dict] = []
    queue = deque([root])
    while queue:
        node = queue.popleft()
        chosen, rejected = choose_sides(node, counts, top_k, one_sided_k)
        prefix = prompt + partial_solution(node, step_delim)
        for c in chosen:
            for r in rejected:
                margin = c.q_value - r.q_value
                path_margin = extreme_path_mean(c, counts, True) - extreme_path_mean(r, counts, False)
                if margin > 0 and path_margin > 0:
                    pairs.append({"prompt": prefix, "pos": c.state["text"] + step_delim,
                                  "neg": r.state["text"] + step_delim, "pos_count": len(chosen),
                                  "neg_count": len(rejected), "step_margin": margin, "path_margin": path_margin,
                                  "pos_tag": c.tag, "neg_tag": r.tag})
        mixed = [c for c in node.children if counts[c.tag][0] > 0 and counts[c.tag][1] > 0]
        if mode == "vis_count" and mixed:
            mixed = [max(mixed, key=lambda c: c.visit_count)]
        queue.extend(mixed)
    return pairs


def edit_distance(a: str, b: str, limit: Optional[int] = None) -> int:
    """Levenshtein distance in characters; with ``limit``, ``min(distance, limit)`` (computed in a band, fast).

    >>> edit_distance("kitten", "sitting"), edit_distance("kitten", "sitting", limit=2)
    (3, 2)
    """
    if limit is not None and abs(len(a) - len(b)) >= limit:
        return limit
    if not a or not b:
        return min(len(a) + len(b), limit) if limit is not None else len(a) + len(b)
    cap = limit if limit is not None else len(a) + len(b)
    band = cap if limit is not None else max(len(a), len(b))
    prev = [min(j, cap) for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        cur = [cap] * (len(b) + 1)
        cur[0] = min(i, cap)
        lo, hi = max(1, i - band), min(len(b), i + band)
        if lo > hi:
            return cap
        for j in range(lo, hi + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]), cap)
        prev = cur
        if limit is not None and min(prev[lo - 1:hi + 1]) >= cap:
            return cap
    return prev[len(b)]


def keep_pair(pair: dict, step_margin: float = 0.5, min_edit_distance: int = 20) -> bool:
    """Upstream's filters: a clear Q margin and two steps that really differ."""
    if pair["step_margin"] < step_margin:
        return False
    return min_edit_distance <= 0 or edit_distance(pair["pos"], pair["neg"], min_edit_distance) >= min_edit_distance


def extract_pairs(records: Iterable[dict], top_k: int = 2, one_sided_k: int = 4, step_margin: float = 0.5,
                  min_edit_distance: int = 20, mode: str = "all", positive: float = 1.0, negative: float = -1.0,
                  step_delim: str = "\n", template: str = SFT_PROMPT, do_prune: bool = True) -> list[dict]:
    """``{prompt, pos, neg, pos_count, neg_count}`` of every tree, filtered (:func:`keep_pair`)."""
    rows = []
    for record in records:
        for pair in tree_pairs(record, top_k, one_sided_k, mode, positive, negative, step_delim, template,
                               do_prune):
            if keep_pair(pair, step_margin, min_edit_distance):
                rows.append({k: pair[k] for k in PAIR_KEYS})
    return rows


# ---------------------------------------------------------------------- data files

def read_rows(path: str | Path, keys: Sequence[str]) -> list[dict]:
    """The rows of a JSON list or JSONL data file, each checked for ``keys``.

    Raises ValueError naming the file and line (JSONL) or item (JSON list) of an unreadable row, a row without
    one of ``keys``, or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        located = [(f"{path}: item {i}", item) for i, item in enumerate(items)]
    else:
        located = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                located.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    if not located:
        raise ValueError(f"{path}: no rows (empty file)")
    for where, row in located:
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(map(repr, missing))} (a row needs {', '.join(keys)})")
    return [row for _, row in located]


def write_rows(path: str | Path, rows: list[dict]) -> None:
    """JSONL, or a JSON list (upstream's format) when ``path`` ends in ``.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------------- CLI

def _input_files(args) -> list[Path]:
    """The positional files plus the ``.jsonl`` files of ``--data_dir`` (upstream skips names with "extra")."""
    files = [Path(f) for f in args.files]
    if args.data_dir:
        files += sorted(p for p in Path(args.data_dir).glob("*.jsonl") if "extra" not in p.name)
    if not files:
        raise SystemExit("error: give tree files (search outputs) or --data_dir")
    return files


def _read_all(files: list[Path]) -> list[dict]:
    records = []
    for f in files:
        try:
            records.extend(load_tree_records(f))
        except (ValueError, FileNotFoundError) as exc:
            raise SystemExit(f"error: {exc}") from None
    return records


def _unescape(text: str) -> str:
    r"""A command-line value with backslash escapes (``\n``) turned into the characters they name.

    >>> _unescape(r"\n"), _unescape("")
    ('\n', '')
    """
    return text.encode("utf-8").decode("unicode_escape") if "\\" in text else text


def _add_common(p) -> None:
    p.add_argument("files", nargs="*", help="search outputs (tree JSONL, ours or upstream's)")
    p.add_argument("--data_dir", default=None, help="also every *.jsonl of this folder (upstream's option)")
    p.add_argument("--output", "--output_file", dest="output", required=True,
                   help="output file: JSONL, or a JSON list if it ends in .json")
    p.add_argument("--step_delim", default="\n", type=_unescape,
                   help="the search's step delimiter, escapes allowed (default: newline; '' joins steps directly)")
    p.add_argument("--no_prune", action="store_true", help="keep subtrees without a valid answer")


def run_extract_sft(args) -> None:
    rows = sft_examples(_read_all(_input_files(args)), n=args.n, step_delim=args.step_delim,
                        do_prune=not args.no_prune)
    write_rows(args.output, rows)
    print(f"wrote {len(rows)} SFT examples ({len({r['query'] for r in rows})} questions) to {args.output}")


def run_extract_pairs(args) -> None:
    from rstar2_agent.math.prompts import load_template

    rows = extract_pairs(_read_all(_input_files(args)), top_k=args.top_k, one_sided_k=args.one_sided_k,
                         step_margin=args.step_margin, min_edit_distance=args.min_edit_distance, mode=args.mode,
                         positive=args.positive, negative=args.negative, step_delim=args.step_delim,
                         template=load_template(args.prompt_path), do_prune=not args.no_prune)
    write_rows(args.output, rows)
    print(f"wrote {len(rows)} preference pairs to {args.output}")


def add_commands(commands) -> None:
    """``extract-sft`` and ``extract-pairs`` under ``rstar2-agent math``."""
    s = commands.add_parser("extract-sft", help="the best correct traces of search trees, for policy SFT",
                            description="Per question the top-n correct, error-free traces by (mean Q, min Q).")
    _add_common(s)
    s.add_argument("--n", type=int, default=SFT_DEFAULTS["n"], help="traces kept per question (default 2)")
    s.set_defaults(func=run_extract_sft)
    p = commands.add_parser("extract-pairs", help="step-level preference pairs of search trees, for the PPM",
                            description="Chosen/rejected sibling steps with Q, path-value, margin and edit-distance "
                                        "conditions (upstream defaults).")
    _add_common(p)
    d = PAIR_DEFAULTS
    p.add_argument("--top_k", type=int, default=d["top_k"], help="chosen / rejected steps per node (default 2)")
    p.add_argument("--one_sided_k", type=int, default=d["one_sided_k"],
                   help="the other side's size when one side has a single step (default 4)")
    p.add_argument("--step_margin", type=float, default=d["step_margin"], help="minimum Q_c - Q_r (default 0.5)")
    p.add_argument("--min_edit_distance", type=int, default=d["min_edit_distance"],
                   help="minimum character edit distance between the two steps (default 20; 0: off)")
    p.add_argument("--mode", choices=["all", "vis_count"], default=d["mode"],
                   help="descend into every mixed child (all) or the most visited one (vis_count)")
    p.add_argument("--positive", type=float, default=d["positive"], help="Q of a correct leaf (default 1)")
    p.add_argument("--negative", type=float, default=d["negative"], help="Q of a wrong leaf (default -1)")
    p.add_argument("--prompt_path", default=None, help="a prompt file with 'prompt_input' (default: upstream SFT)")
    p.set_defaults(func=run_extract_pairs)
