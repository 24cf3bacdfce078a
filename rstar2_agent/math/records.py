"""Questions in, search trees out, in upstream's file formats; resume an interrupted run.

Input (``--qaf``): a JSON list or a JSONL file of items with ``question`` and ``answer`` fields, or items that
wrap them in an ``example`` object (``{"example": {"question": ..., "answer": ...}}``).

Output: one JSONL line per question, appended as each question finishes: the item's own fields plus
``rstar``, every node of its tree by tag::

    {"question": "...", "answer": "4",
     "rstar": {"0":     {"text": "", ..., "value": 0.0, "q_value": 0.0, "visit_count": 2},
               "0.1":   {"text": "<code>\\nx = 2 + 2\\n<end_of_step>", "action": "python_interpreter", ...},
               "0.1.1": {"text": "...\\boxed{4}...", "final_answer": "4", "q_value": 1.0, ...}}}

Each node has ``text``, ``extra_info``, ``action``, ``action_input``, ``final_answer``, ``observation``,
``value``, ``q_value`` and ``visit_count``. A run resumes by skipping the questions whose line is already in
the output (a last line cut by a crash is ignored and that question searched again).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from rstar2_agent.math.tree import Node, new_state

__all__ = ["NODE_FIELDS", "unwrap_item", "load_questions", "node_record", "tree_record", "append_record",
           "read_records", "pending_items", "rollout_path", "drop_questions", "rebuild_tree"]

NODE_FIELDS = ("text", "extra_info", "action", "action_input", "final_answer", "observation", "value", "q_value",
               "visit_count")


def unwrap_item(item: dict) -> dict:
    """The item with ``question``/``answer`` at the top level (an ``example`` wrapper is lifted)."""
    if "question" not in item and isinstance(item.get("example"), dict):
        item = {**{k: v for k, v in item.items() if k != "example"}, **item["example"]}
    if "question" not in item:
        raise ValueError(f"item without a 'question' field: {sorted(item)}")
    return item


def load_questions(path: str | Path) -> list[dict]:
    """The items of a ``.json`` (a list) or ``.jsonl`` file, unwrapped."""
    text = Path(path).read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        items = json.loads(text)
    else:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [unwrap_item(item) for item in items]


def node_record(node: Node) -> dict:
    """One node in upstream's output layout."""
    return {**{k: node.state.get(k, "") for k in ("text", "extra_info", "action", "action_input", "final_answer")},
            "observation": node.observation, "value": node.value, "q_value": node.q_value,
            "visit_count": node.visit_count}


def tree_record(item: dict, root: Node) -> dict:
    """The output line of one question: its fields plus ``rstar`` (every node by tag)."""
    return {**item, "rstar": {node.tag: node_record(node) for node in root.walk()}}


def append_record(path: str | Path, record: dict) -> None:
    """Append one line and flush it to disk, so a crash loses at most the question being written.

    A last line cut by an earlier crash is closed first, so the new line stays a line of its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, 2)
            cut = f.read(1) != b"\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(("\n" if cut else "") + json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()


def read_records(path: str | Path) -> list[dict]:
    """The complete lines of an output file (a missing file is empty; a cut last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by an interrupted run
    return records


def pending_items(items: Iterable[dict], output: str | Path) -> list[dict]:
    """The items whose question has no complete line in ``output`` yet, in order."""
    done = {str(r.get("question")) for r in read_records(output)}
    return [item for item in items if str(item["question"]) not in done]


def rollout_path(output: str | Path, rollout: int) -> Path:
    """Where the trees after MCTS rollout ``rollout`` (1-based) go, as upstream's ``rollout/rolloutNN*``:
    ``<output folder>/rollout/rollout01.<output name>`` for rollout 1, one line per question."""
    output = Path(output)
    return output.parent / "rollout" / f"rollout{rollout:02d}.{output.name}"


def drop_questions(path: str | Path, questions: set[str]) -> int:
    """Rewrite ``path`` without the lines of ``questions`` (an interrupted run's partial snapshots, before
    those questions are searched again); the number of lines dropped."""
    path = Path(path)
    records = read_records(path)
    kept = [r for r in records if str(r.get("question")) not in questions]
    if len(kept) < len(records):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(path)
    return len(records) - len(kept)


def rebuild_tree(record: dict, c_puct: float = 2.0) -> Node:
    """The tree of an output line, statistics included (terminal: a node with a final answer)."""
    nodes: dict[str, Node] = {}
    for tag in sorted(record["rstar"], key=lambda t: [int(p) for p in t.split(".")]):
        data = record["rstar"][tag]
        parent_tag: Optional[str] = tag.rsplit(".", 1)[0] if "." in tag else None
        parent = nodes.get(parent_tag) if parent_tag else None
        node = Node(tag=tag, depth=tag.count("."), parent=parent, c_puct=c_puct,
                    state=new_state(**{k: data.get(k, "") for k in ("text", "extra_info", "action", "action_input",
                                                                     "final_answer")}),
                    observation=data.get("observation", ""), value=float(data.get("value", 0.0)),
                    visit_count=int(data.get("visit_count", 0)))
        node.value_sum = float(data.get("q_value", 0.0)) * node.visit_count
        node.is_terminal = bool(node.state["final_answer"])
        if parent is not None:
            parent.children.append(node)
        nodes[tag] = node
    return nodes["0"]
