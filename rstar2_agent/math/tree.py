"""Search-tree nodes with upstream rStar-Math semantics.

A node holds a reasoning step (``state``), its place in the tree (``tag`` such as ``"0.1.3"``: the root is
``"0"``, its second child ``"0.2"``) and the statistics MCTS needs:

* ``update(v)``: the first call also sets ``value = v`` (the node's *initial value*, e.g. its PPM score);
  every call adds one visit and ``v`` to ``value_sum``;
* ``q_value = value_sum / visit_count`` (0 while unvisited);
* ``update_recursive(v)``: ``update(v)`` on the node and on every ancestor up to the root.

Selection (:func:`select_child`) uses upstream's score ``Q + c_puct * sqrt(ln N_parent / N_child)``, which is
0 when the parent or the child has no visits. It is a UCT form (there is no prior term, despite the name
"PUCT" upstream). Ties go to the first child, terminal children are skipped, and a node whose children are
all terminal becomes terminal itself, so the search never descends into an exhausted subtree again.

Worked example (c_puct 2)::

    root "0"            two rollouts: +1 through "0.1", -1 through "0.2"
    |- "0.1"   N=1, Q=+1     score = 1 + 2*sqrt(ln 2 / 1) = 2.665
    `- "0.2"   N=1, Q=-1     score = -1 + 2*sqrt(ln 2 / 1) = 0.665
    root: N=2, value_sum=0, Q=0                 -> select_child(root) is "0.1"
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Optional

__all__ = ["Node", "selection_score", "select_child", "new_state"]


def new_state(text: str = "", extra_info: str = "", action: str = "", action_input: str = "",
              final_answer: str = "") -> dict:
    """A node's ``state`` dict with upstream's five fields."""
    return {"text": text, "extra_info": extra_info, "action": action, "action_input": action_input,
            "final_answer": final_answer}


@dataclass(eq=False)
class Node:
    """One step of a solution: ``state`` plus tree links and visit statistics (see the module docstring)."""

    tag: str = "0"
    depth: int = 0
    parent: Optional["Node"] = None
    state: dict = field(default_factory=new_state)
    children: list["Node"] = field(default_factory=list)
    is_terminal: bool = False
    consecutive_errors: int = 0
    observation: str = ""
    value: float = 0.0
    visit_count: int = 0
    value_sum: float = 0.0
    c_puct: float = 2.0

    # ------------------------------------------------------------------ structure
    def add_child(self, state: dict | None = None) -> "Node":
        """Append a child tagged ``<my tag>.<its 1-based index>``, one level deeper."""
        child = Node(tag=f"{self.tag}.{len(self.children) + 1}", depth=self.depth + 1, parent=self,
                     state=state if state is not None else new_state(), c_puct=self.c_puct,
                     consecutive_errors=self.consecutive_errors)
        self.children.append(child)
        return child

    def path(self) -> list["Node"]:
        """The nodes from the root down to this one (inclusive)."""
        nodes = []
        node: Optional[Node] = self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def walk(self) -> Iterator["Node"]:
        """This node and all its descendants, depth first, children in order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def is_valid_leaf(self) -> bool:
        """A terminal holding a real answer (not one of the failure messages of :mod:`.steps`)."""
        from rstar2_agent.math.steps import FAILURE_ANSWERS

        return self.is_terminal and bool(self.state["final_answer"]) and \
            self.state["final_answer"] not in FAILURE_ANSWERS

    # ------------------------------------------------------------------ statistics
    @property
    def q_value(self) -> float:
        """Mean value of the visits so far; 0 while unvisited."""
        return self.value_sum / self.visit_count if self.visit_count else 0.0

    def update(self, v: float) -> None:
        """Record one visit worth ``v``; the first one also sets the initial ``value``."""
        if self.visit_count == 0:
            self.value = float(v)
        self.visit_count += 1
        self.value_sum += float(v)

    def update_recursive(self, v: float) -> None:
        """``update(v)`` on this node and every ancestor (back-propagation)."""
        for node in reversed(self.path()):
            node.update(v)


def selection_score(parent: Node, child: Node) -> float:
    """``Q(child) + c_puct * sqrt(ln N(parent) / N(child))``; 0 if either is unvisited.

    >>> p, c = Node(visit_count=2, value_sum=0.0), Node(visit_count=1, value_sum=1.0)
    >>> round(selection_score(p, c), 3)
    2.665
    """
    if parent.visit_count == 0 or child.visit_count == 0:
        return 0.0
    return child.q_value + child.c_puct * math.sqrt(math.log(parent.visit_count) / child.visit_count)


def select_child(node: Node) -> Optional[Node]:
    """The non-terminal child with the highest :func:`selection_score` (first wins a tie), or None.

    When every child is terminal, ``node`` itself is marked terminal and None is returned.
    """
    best, best_score = None, -math.inf
    for child in node.children:
        if child.is_terminal:
            continue
        score = selection_score(node, child)
        if score > best_score:
            best, best_score = child, score
    if best is None and node.children:
        node.is_terminal = True
    return best
