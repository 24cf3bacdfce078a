"""Upstream output JSONL: write, read back, rebuild the tree, resume; question files in json/jsonl/example form."""

from __future__ import annotations

import json

from rstar2_agent.math.config import SearchConfig
from rstar2_agent.math.records import (NODE_FIELDS, append_record, load_questions, pending_items, read_records,
                                       rebuild_tree, tree_record)
from rstar2_agent.math.search import run_search
from rstar2_agent.math.steps import parse_step
from rstar2_agent.math.tree import Node
from test_math_search import QUESTIONS, InTestExecutor, ScriptedGenerator


def small_tree() -> Node:
    root = Node()
    a = root.add_child(parse_step("<code>\nx = 1\n<end_of_step>"))
    b = a.add_child({k: v for k, v in parse_step(r"\boxed{1}").items() if k != "terminal"})
    b.is_terminal = True
    a.observation = ""
    b.update_recursive(1.0)
    root.add_child({k: v for k, v in parse_step(r"\boxed{2}").items() if k != "terminal"}).update_recursive(-1.0)
    return root


def test_record_layout_and_round_trip(tmp_path):
    root = small_tree()
    out = tmp_path / "out" / "trees.jsonl"
    append_record(out, tree_record({"question": "q", "answer": "1", "level": 3}, root))
    [rec] = read_records(out)
    assert rec["question"] == "q" and rec["level"] == 3
    assert sorted(rec["rstar"]) == ["0", "0.1", "0.1.1", "0.2"]
    for data in rec["rstar"].values():
        assert set(data) == set(NODE_FIELDS)
    assert rec["rstar"]["0.1.1"]["final_answer"] == "1" and rec["rstar"]["0.1"]["action"] == "python_interpreter"
    assert (rec["rstar"]["0"]["visit_count"], rec["rstar"]["0"]["q_value"]) == (2, 0.0)
    back = rebuild_tree(rec)
    assert [(n.tag, n.visit_count, n.q_value, n.is_terminal) for n in back.walk()] == \
        [(n.tag, n.visit_count, n.q_value, n.is_terminal or bool(n.state["final_answer"])) for n in root.walk()]


def test_search_output_and_resume(tmp_path):
    out = tmp_path / "trees.jsonl"
    cfg = SearchConfig(n_generate_sample=2, iterations=1, max_depth=4, is_sampling=True, batch_size=1)
    gen = ScriptedGenerator()

    def write(tree):
        append_record(out, tree_record(tree.item, tree.root))

    run_search(QUESTIONS[:2], cfg, gen, InTestExecutor(), on_done=write)
    assert [r["question"] for r in read_records(out)] == [q["question"] for q in QUESTIONS[:2]]
    with out.open("a") as f:
        f.write('{"question": "What is 1+1?", "rsta')  # an interrupted write of the third
    todo = pending_items(QUESTIONS, out)
    assert todo == QUESTIONS[2:]
    calls_before = len(gen.calls)
    run_search(todo, cfg, gen, InTestExecutor(), on_done=write)
    assert len(gen.calls) - calls_before == 3  # only the third question was searched
    records = read_records(out)
    assert [r["question"] for r in records] == [q["question"] for q in QUESTIONS]
    assert records[2]["rstar"]["0.1.1.1"]["final_answer"] == "2"
    assert pending_items(QUESTIONS, out) == []


def test_question_files(tmp_path):
    as_json = tmp_path / "q.json"
    as_json.write_text(json.dumps([{"question": "a", "answer": "1"}]))
    as_jsonl = tmp_path / "q.jsonl"
    as_jsonl.write_text('{"example": {"question": "b", "answer": "2"}, "id": 7}\n\n{"question": "c"}\n')
    assert load_questions(as_json) == [{"question": "a", "answer": "1"}]
    assert load_questions(as_jsonl) == [{"question": "b", "answer": "2", "id": 7}, {"question": "c"}]


def test_search_items_writes_each_rollouts_trees_and_a_resume_replaces_an_interrupted_questions_snapshots(tmp_path):
    from rstar2_agent.math.records import rollout_path
    from rstar2_agent.math.run import search_items

    out = tmp_path / "trees.jsonl"
    cfg = SearchConfig(n_generate_sample=2, iterations=3, max_depth=4, is_sampling=True, batch_size=-1)
    search_items(QUESTIONS[:2], cfg, ScriptedGenerator(), InTestExecutor(), out, log=lambda line: None)
    final = {r["question"]: r for r in read_records(out)}
    for k in (1, 2, 3):
        snapshot = read_records(rollout_path(out, k))
        assert sorted(r["question"] for r in snapshot) == sorted(final)
        for record in snapshot:  # a tree only grows: each snapshot's nodes are in the final tree
            assert set(record["rstar"]) <= set(final[record["question"]]["rstar"])
            assert record["rstar"]["0"]["visit_count"] <= final[record["question"]]["rstar"]["0"]["visit_count"]
    assert rollout_path(out, 1) == tmp_path / "rollout" / "rollout01.trees.jsonl"
    last = read_records(rollout_path(out, 3))
    assert {r["question"]: r["rstar"] for r in last} == {q: r["rstar"] for q, r in final.items()}
    # an interrupted run had written rollout 1 of the third question, but not its final line
    append_record(rollout_path(out, 1), {"question": QUESTIONS[2]["question"], "rstar": {"0": {}}})
    search_items(QUESTIONS[:3], cfg, ScriptedGenerator(), InTestExecutor(), out, log=lambda line: None)
    third = [r for r in read_records(rollout_path(out, 1)) if r["question"] == QUESTIONS[2]["question"]]
    assert len(third) == 1 and third[0]["rstar"]["0"]["visit_count"] >= 1
    assert len(read_records(rollout_path(out, 1))) == 3


def test_the_search_progress_bar_counts_every_rollout_and_reaches_its_total(tmp_path, monkeypatch):
    import io

    from tqdm import tqdm

    from rstar2_agent.math import run

    bars = []

    def bar(total, unit):
        bars.append(tqdm(total=total, unit=unit, file=io.StringIO(), disable=False))
        return bars[-1]

    monkeypatch.setattr(run, "progress_bar", bar)
    lines = []
    cfg = SearchConfig(n_generate_sample=2, iterations=3, max_depth=4, is_sampling=True)
    run.search_items(QUESTIONS, cfg, ScriptedGenerator(), InTestExecutor(), tmp_path / "t.jsonl", log=lines.append)
    assert (bars[0].total, bars[0].n, bars[0].unit) == (3 * len(QUESTIONS), 3 * len(QUESTIONS), "rollout")
    assert "judge calls" in bars[0].postfix and not any(line.startswith("[") for line in lines)
    beam = SearchConfig(mode="bs", n_generate_sample=2, step_beam_width=2, max_depth=4, need_value_func=False)
    run.search_items(QUESTIONS, beam, ScriptedGenerator(), InTestExecutor(), tmp_path / "b.jsonl", log=lines.append)
    assert (bars[1].total, bars[1].n, bars[1].unit) == (len(QUESTIONS), len(QUESTIONS), "question")
