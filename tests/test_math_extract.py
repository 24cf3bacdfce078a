"""SFT traces and PPM preference pairs from hand-built search trees; expected outputs worked out by hand here."""

from __future__ import annotations

import doctest
import json

import pytest

from rstar2_agent.cli import main as cli_main
from rstar2_agent.math import extract
from rstar2_agent.math.extract import (choose_sides, edit_distance, extract_pairs, load_tree_records,
                                       mark_outcomes, read_rows, sft_examples, tree_pairs)
from rstar2_agent.math.prompts import question_prompt
from rstar2_agent.math.records import append_record, rebuild_tree, tree_record
from rstar2_agent.math.steps import TOO_MANY_ERRORS
from rstar2_agent.math.tree import Node, new_state

Q = "What is 2 + 2?"
PROMPT = question_prompt(Q)  # "<|user|>:\nWhat is 2 + 2?\n<|assistant|>: Let's think step by step ..."


def step(name: str) -> str:
    """A distinct step text: two different names make steps at least 25 edits apart."""
    return f"<code>\n# {name * 25}\nx = 2 + 2\n<end_of_step>"


def answer(value: str) -> str:
    return f"<answer>The answer is \\boxed{{{value}}}<end_of_answer>"


def add(parent: Node, q: float, text: str = "", final: str = "", visits: int = 1) -> Node:
    """A child with Q = ``q`` after ``visits`` visits; a ``final`` answer makes it terminal."""
    child = parent.add_child(new_state(text=text or answer(final), final_answer=final))
    child.is_terminal = bool(final)
    child.visit_count, child.value_sum, child.value = visits, q * visits, q
    return child


def record(root: Node, truth: str = "4", question: str = Q) -> dict:
    """Written and read back the way the search writes it (upstream layout)."""
    return json.loads(json.dumps(tree_record({"question": question, "answer": truth}, root)))


def docstring_tree() -> Node:
    """The tree of extract's module docstring::

        0
        |- 0.1 [0.5]  |- 0.1.1 + [1]
        |             `- 0.1.2 - [-1]
        |- 0.2 [-0.6] `- 0.2.1 - [-1]
        `- 0.3 E [-1]
    """
    root = Node(visit_count=4)
    a = add(root, 0.5, step("a"), visits=2)
    add(a, 1.0, final="4")
    add(a, -1.0, final="5")
    b = add(root, -0.6, step("b"), visits=2)
    add(b, -1.0, final="5")
    add(root, -1.0, step("err") + "\n<output>NameError<end_of_output>", final=TOO_MANY_ERRORS)
    return root


# ---------------------------------------------------------------------------------------------- doctests

def test_docstring_examples_hold():
    result = doctest.testmod(extract, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------- SFT traces

def test_three_node_tree_gives_its_one_correct_trace():
    root = Node(visit_count=1)
    s = add(root, 1.0, step("s"))
    add(s, 1.0, final="4")
    rows = sft_examples([record(root)])
    assert rows == [{"query": Q, "response": step("s") + "\n" + answer("4")}]


def test_sft_ranks_by_mean_then_min_and_skips_wrong_and_error_traces():
    root = Node(visit_count=5)
    a = add(root, 0.5, step("a"))      # trace a -> 4: mean (0.5 + 1) / 2 = 0.75, min 0.5
    add(a, 1.0, final="4")
    add(a, -1.0, final="5")            # wrong: never an SFT trace
    b = add(root, 0.8, step("b"))      # trace b -> 4: mean 0.9, min 0.8
    add(b, 1.0, final="4")
    c = add(root, 0.9, step("c") + "\n<output>ZeroDivisionError<end_of_output>")  # best mean, but "error"
    add(c, 1.0, final="4")
    d = add(root, 0.6, step("d"))      # trace d -> 4: mean 0.8, min 0.6
    add(d, 1.0, final="4")
    rec = record(root)
    responses = [r["response"] for r in sft_examples([rec], n=2)]
    assert responses == [step("b") + "\n" + answer("4"), step("d") + "\n" + answer("4")]
    assert [r["response"] for r in sft_examples([rec], n=3)][2] == step("a") + "\n" + answer("4")
    assert len(sft_examples([rec], n=10)) == 3  # b, d, a: c has "error", the wrong leaf never counts


def test_sft_tie_on_mean_is_broken_by_min():
    root = Node(visit_count=2)
    flat = add(root, 0.5, step("flat"))
    mid = add(flat, 0.5, step("mid"))            # flat -> mid -> 4: mean (0.5 + 0.5 + 1) / 3 = 2/3, min 0.5
    add(mid, 1.0, final="4")
    steep = add(root, 0.0, step("steep"))
    mid2 = add(steep, 1.0, step("mid2"))         # steep -> mid2 -> 4: mean 2/3, min 0.0
    add(mid2, 1.0, final="4")
    rows = sft_examples([record(root)], n=1)
    assert rows[0]["response"].startswith(step("flat"))


def test_sft_pools_trees_of_one_question_and_drops_duplicates():
    def one(q_step: float, name: str) -> dict:
        root = Node(visit_count=1)
        s = add(root, q_step, step(name))
        add(s, 1.0, final="4")
        return record(root)

    rows = sft_examples([one(0.2, "x"), one(0.9, "y"), one(0.2, "x"), one(0.5, "z")], n=2)
    assert [r["response"] for r in rows] == [step("y") + "\n" + answer("4"), step("z") + "\n" + answer("4")]


def test_tree_without_a_valid_answer_is_pruned_away():
    root = Node(visit_count=1)
    add(root, -1.0, step("e"), final=TOO_MANY_ERRORS)
    assert sft_examples([record(root)]) == []
    assert extract_pairs([record(root)]) == []


# ---------------------------------------------------------------------------------------------- pairs

def test_marking_counts_correct_and_wrong_leaves_but_not_code_errors():
    counts = mark_outcomes(rebuild_tree(record(docstring_tree())))
    assert counts == {"0": (1, 2), "0.1": (1, 1), "0.1.1": (1, 0), "0.1.2": (0, 1), "0.2": (0, 1),
                      "0.2.1": (0, 1), "0.3": (0, 0)}


def test_docstring_tree_pairs_by_hand():
    pairs = tree_pairs(record(docstring_tree()))
    # at the root: chosen [0.1] (one node) so rejected takes up to 4: [0.2 (Q -0.6), 0.1 (Q 0.5)].
    #   (0.1, 0.2): margin 0.5 - (-0.6) = 1.1 > 0; best path of 0.1 = 0.1 -> 0.1.1: (0.5 + 1) / 2 = 0.75;
    #               worst path of 0.2 = 0.2 -> 0.2.1: (-0.6 - 1) / 2 = -0.8; 0.75 > -0.8 -> kept.
    #   (0.1, 0.1): margin 0 -> not a pair.
    # 0.1 has both a correct and a wrong leaf below: at 0.1, (0.1.1, 0.1.2), margin 2, paths 1 > -1.
    assert [(p["pos_tag"], p["neg_tag"], p["pos_count"], p["neg_count"]) for p in pairs] == [
        ("0.1", "0.2", 1, 2), ("0.1.1", "0.1.2", 1, 1)]
    assert pairs[0]["step_margin"] == pytest.approx(1.1)
    assert pairs[0]["path_margin"] == pytest.approx(0.75 + 0.8)
    assert pairs[0]["prompt"] == PROMPT
    assert pairs[0]["pos"] == step("a") + "\n" and pairs[0]["neg"] == step("b") + "\n"
    assert pairs[1]["prompt"] == PROMPT + step("a") + "\n"
    assert pairs[1]["pos"] == answer("4") + "\n" and pairs[1]["neg"] == answer("5") + "\n"
    # the filters: both margins >= 0.5, but the two answer steps are 1 edit apart (4 vs 5) < 20
    rows = extract_pairs([record(docstring_tree())])
    assert rows == [{k: pairs[0][k] for k in ("prompt", "pos", "neg", "pos_count", "neg_count")}]


def _fan(n_correct: int, n_wrong: int) -> Node:
    """A root with ``n_correct`` correct children (Q 0.9, 0.8, ...) and ``n_wrong`` wrong ones (Q -0.9, -0.8, ...)."""
    root = Node(visit_count=n_correct + n_wrong)
    for i in range(n_correct):
        s = add(root, 0.9 - i / 10, step(f"good{i}"))
        add(s, 1.0, final="4")
    for i in range(n_wrong):
        s = add(root, -0.9 + i / 10, step(f"bad{i}"))
        add(s, -1.0, final="5")
    return root


@pytest.mark.parametrize("n_correct, n_wrong, chosen, rejected", [
    (2, 3, ["0.1", "0.2"], ["0.3", "0.4"]),                 # both sides >= 2: top 2 each
    (1, 6, ["0.1"], ["0.2", "0.3", "0.4", "0.5"]),          # one chosen: rejected takes the 4 lowest Q
    (5, 1, ["0.1", "0.2", "0.3", "0.4"], ["0.6"]),          # one rejected: chosen takes the 4 highest Q
    (1, 1, ["0.1"], ["0.2"]),
    (3, 0, [], []),                                         # nothing to reject: no pairs here
])
def test_top2_and_one_sided_top4_rule(n_correct, n_wrong, chosen, rejected):
    root = rebuild_tree(record(_fan(n_correct, n_wrong)))
    got = choose_sides(root, mark_outcomes(root))
    assert ([c.tag for c in got[0]], [r.tag for r in got[1]]) == (chosen, rejected)
    pairs = extract_pairs([record(_fan(n_correct, n_wrong))])
    assert len(pairs) == len(chosen) * len(rejected)
    assert all((p["pos_count"], p["neg_count"]) == (len(chosen), len(rejected)) for p in pairs)


def test_path_value_condition_drops_a_pair_with_a_positive_step_margin():
    root = Node(visit_count=2)
    c = add(root, 0.0, step("c"))          # best path c -> m -> +: (0 - 0.9 + 1) / 3 = 0.033
    m = add(c, -0.9, step("m"))
    add(m, 1.0, final="4")
    r = add(root, -0.1, step("r"))         # worst path r -> n1 -> n2 -> -: (-0.1 + 0.95 + 0.95 - 1) / 4 = 0.2
    n1 = add(r, 0.95, step("n1"))
    n2 = add(n1, 0.95, step("n2"))
    add(n2, -1.0, final="5")
    pairs = tree_pairs(record(root))
    assert pairs == []  # margin 0.1 > 0 but 0.033 < 0.2


def test_filters_step_margin_and_edit_distance():
    root = Node(visit_count=4)
    a = add(root, 0.3, step("a"))
    add(a, 1.0, final="4")
    b = add(root, 0.0, step("b"))              # margin 0.3: below 0.5
    add(b, -1.0, final="5")
    rec = record(root)
    assert len(tree_pairs(rec)) == 1
    assert extract_pairs([rec]) == []
    assert len(extract_pairs([rec], step_margin=0.3)) == 1
    # two steps two characters apart: the margin is large, the edit distance 2 < 20
    near_a, near_b = "<code>\nx = 2 + 2\n<end_of_step>", "<code>\ny = 2 + 3\n<end_of_step>"
    root = Node(visit_count=2)
    a = add(root, 0.5, near_a)
    add(a, 1.0, final="4")
    b = add(root, -0.5, near_b)
    add(b, -1.0, final="5")
    rec = record(root)
    assert edit_distance(near_a + "\n", near_b + "\n") == 2
    assert extract_pairs([rec]) == []
    assert len(extract_pairs([rec], min_edit_distance=2)) == 1
    assert len(extract_pairs([rec], min_edit_distance=0)) == 1


def test_vis_count_mode_descends_only_into_the_most_visited_mixed_child():
    root = Node(visit_count=4)
    for name, visits in (("a", 1), ("b", 3)):
        s = add(root, 0.0, step(name), visits=visits)
        add(s, 1.0, step(name + "+"), final="4")
        add(s, -1.0, step(name + "-"), final="5")
    rec = record(root)
    assert [p["prompt"].endswith(step("b") + "\n") for p in extract_pairs([rec], mode="vis_count")] == [True]
    assert len(extract_pairs([rec], mode="all")) == 2


def test_upstream_zero_based_tags_read_the_same():
    rec = record(docstring_tree())
    shifted = {}
    for tag, node in rec["rstar"].items():
        parts = tag.split(".")
        shifted[".".join([parts[0]] + [str(int(p) - 1) for p in parts[1:]])] = node
    upstream = {**rec, "rstar": shifted}
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_tag")} for r in rows]  # noqa: E731
    assert strip(tree_pairs(upstream)) == strip(tree_pairs(rec))
    assert sft_examples([upstream]) == sft_examples([rec])


# ---------------------------------------------------------------------------------------------- files and CLI

def test_cli_round_trip_on_a_tree_file_written_by_records(tmp_path, capsys):
    trees = tmp_path / "trees" / "round1.jsonl"
    append_record(trees, tree_record({"question": Q, "answer": "4"}, docstring_tree()))
    append_record(trees, tree_record({"question": "1+1?", "answer": "2"}, _fan(1, 1)))
    sft_out, pairs_out = tmp_path / "sft.jsonl", tmp_path / "pairs.json"
    cli_main(["math", "extract-sft", str(trees), "--output", str(sft_out)])
    cli_main(["math", "extract-pairs", "--data_dir", str(trees.parent), "--output_file", str(pairs_out)])
    assert "wrote 1 SFT examples" in capsys.readouterr().out
    sft = read_rows(sft_out, ("query", "response"))
    assert sft == [{"query": Q, "response": step("a") + "\n" + answer("4")}]  # "1+1?": its answer 4 is wrong
    pairs = json.loads(pairs_out.read_text())  # .json: a JSON list, as upstream writes
    # (0.1, 0.2) of the first tree and (0.1, 0.2) of the second
    assert len(pairs) == 2 and set(pairs[0]) == {"prompt", "pos", "neg", "pos_count", "neg_count"}
    assert read_rows(pairs_out, ("prompt", "pos", "neg", "pos_count", "neg_count")) == pairs


def test_bad_inputs_name_the_file_and_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.jsonl: no tree records"):
        load_tree_records(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(record(docstring_tree())) + "\n\n" + json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:3: no 'rstar' tree"):
        load_tree_records(bad)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"query": "q", "response": "r"}\n{"query": "q"}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: missing 'response'"):
        read_rows(rows, ("query", "response"))
    with pytest.raises(SystemExit, match="empty.jsonl"):
        cli_main(["math", "extract-sft", str(empty), "--output", str(tmp_path / "o.jsonl")])


# ---------------------------------------------------------------------------------------------- a real search

class _Scripted:
    """Root -> [code step, wrong answer 5]; code step -> print, closing the block; its output -> answer 4."""

    def generate(self, prompts, n, params):
        from rstar2_agent.math.steps import Continuation

        out = []
        for p in prompts:
            if "<end_of_output>" in p:
                out.append([Continuation("<answer>The answer is \\boxed{4}", "<end_of_answer>", 5)])
            elif "<code>" in p:
                out.append([Continuation("print(x)\n", "<end_of_code>", 3)])
            else:
                out.append([Continuation("<code>\nx = 2 + 2\n", "<end_of_step>", 5),
                            Continuation("The answer is \\boxed{5}", None, 5)])
        return out


class _Executor:
    def run(self, codes):
        return ["4" if "print(x)" in code else "" for code in codes]


def test_trees_from_our_search_give_the_expected_trace_and_pair(tmp_path):
    from rstar2_agent.math.config import SearchConfig
    from rstar2_agent.math.run import search_items

    out = tmp_path / "trees.jsonl"
    cfg = SearchConfig(n_generate_sample=2, iterations=4, max_depth=6, is_sampling=True, errors_threshold=1,
                       save_intermediate_rollouts=False)
    search_items([{"question": Q, "answer": "4"}], cfg, _Scripted(), _Executor(), out, log=lambda _: None)
    records = load_tree_records(out)
    code = "<code>\nx = 2 + 2\n<end_of_step>"
    closed = "print(x)\n<end_of_code>\n<output>4<end_of_output>"
    final = "<answer>The answer is \\boxed{4}<end_of_answer>"
    assert sft_examples(records) == [{"query": Q, "response": "\n".join([code, closed, final])}]
    # at the root: chosen [0.1 code step (Q 1)], rejected [0.2 wrong answer (Q -1)]; margin 2, 21+ edits apart
    assert extract_pairs(records) == [{"prompt": PROMPT, "pos": code + "\n", "neg": "The answer is \\boxed{5}\n",
                                       "pos_count": 1, "neg_count": 1}]
