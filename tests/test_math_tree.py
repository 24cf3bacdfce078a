"""Search-tree nodes: update / Q semantics, back-propagation and selection on a hand-built 3-level tree."""

from __future__ import annotations

import math

from rstar2_agent.math.tree import Node, select_child, selection_score


def build_tree():
    """root -> a, b ; a -> a1, a2. Rollouts: a1 +1, a2 -1, b -1, a1 +1."""
    root = Node()
    a, b = root.add_child(), root.add_child()
    a1, a2 = a.add_child(), a.add_child()
    for leaf, v in [(a1, 1.0), (a2, -1.0), (b, -1.0), (a1, 1.0)]:
        leaf.update_recursive(v)
    return root, a, b, a1, a2


def test_tags_and_depths():
    root, a, b, a1, a2 = build_tree()
    assert [n.tag for n in root.walk()] == ["0", "0.1", "0.1.1", "0.1.2", "0.2"]
    assert (root.depth, a.depth, a1.depth) == (0, 1, 2)
    assert a2.path() == [root, a, a2]


def test_first_update_sets_initial_value_and_q_is_mean():
    node = Node()
    assert node.q_value == 0.0 and node.visit_count == 0
    node.update(0.4)
    node.update(-1.0)
    node.update(1.0)
    assert node.value == 0.4  # the first update only
    assert node.visit_count == 3
    assert math.isclose(node.value_sum, 0.4)
    assert math.isclose(node.q_value, 0.4 / 3)


def test_back_propagated_q_values():
    root, a, b, a1, a2 = build_tree()
    # visits: root 4 (sum 0), a 3 (sum 1), b 1 (-1), a1 2 (2), a2 1 (-1)
    assert (root.visit_count, a.visit_count, b.visit_count, a1.visit_count, a2.visit_count) == (4, 3, 1, 2, 1)
    assert root.q_value == 0.0
    assert math.isclose(a.q_value, 1 / 3)
    assert (b.q_value, a1.q_value, a2.q_value) == (-1.0, 1.0, -1.0)
    assert (root.value, a.value, a1.value, a2.value, b.value) == (1.0, 1.0, 1.0, -1.0, -1.0)


def test_selection_scores_and_order():
    root, a, b, a1, a2 = build_tree()
    expected_a = 1 / 3 + 2 * math.sqrt(math.log(4) / 3)
    expected_b = -1 + 2 * math.sqrt(math.log(4) / 1)
    assert math.isclose(selection_score(root, a), expected_a)
    assert math.isclose(selection_score(root, b), expected_b)
    assert select_child(root) is (a if expected_a > expected_b else b)
    expected_a1 = 1 + 2 * math.sqrt(math.log(3) / 2)
    expected_a2 = -1 + 2 * math.sqrt(math.log(3) / 1)
    assert select_child(a) is (a1 if expected_a1 > expected_a2 else a2)
    assert select_child(a) is a1


def test_unvisited_scores_zero_and_ties_go_first():
    root = Node()
    c1, c2 = root.add_child(), root.add_child()
    assert selection_score(root, c1) == 0.0  # parent unvisited
    root.update(1.0)
    assert selection_score(root, c1) == 0.0  # child unvisited
    assert select_child(root) is c1  # tie at 0: the first child
    c2.update(0.5)
    root.update(0.5)
    assert select_child(root) is c2  # 0.5 + 2*sqrt(ln 2) > 0


def test_terminal_children_skipped_and_parent_becomes_terminal():
    root, a, b, a1, a2 = build_tree()
    a1.is_terminal = True
    assert select_child(a) is a2
    a2.is_terminal = True
    assert select_child(a) is None
    assert a.is_terminal
    assert select_child(root) is b
    leaf = Node()
    assert select_child(leaf) is None and not leaf.is_terminal  # no children: not exhausted, just unexpanded
