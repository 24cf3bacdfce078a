"""ERROR_CASE_SAVE_PATH keeps failed submissions (and only those) for debugging."""

import json

import httpx

from code_judge.local import LocalJudge


def test_failed_cases_are_saved(redis_server, tmp_path):
    with LocalJudge(workers=1, redis_uri=redis_server.uri,
                    env={"ERROR_CASE_SAVE_PATH": str(tmp_path), "REDIS_KEY_PREFIX": "error-cases"}) as judge:
        body = {"type": "batch", "submissions": [
            {"sub_id": "ok-1", "type": "python", "solution": "print(1)"},
            {"sub_id": "bad/../2", "type": "python", "solution": "raise KeyError('k')"},
        ]}
        results = httpx.post(judge.url + "/run/long-batch", json=body, timeout=60).json()["results"]
    assert [r["run_success"] for r in results] == [True, False]
    assert [p.name for p in tmp_path.iterdir()] == ["bad_.._2"]
    case = tmp_path / "bad_.._2"
    assert (case / "solution.txt").read_text() == "raise KeyError('k')"
    assert json.loads((case / "result.json").read_text())["stderr"].rstrip().endswith("KeyError: 'k'")
    assert json.loads((case / "submission.json").read_text())["sub_id"] == "bad/../2"
