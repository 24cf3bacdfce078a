"""The HTTP API is a drop-in for the public code-judge: paths, request and response fields, reasons."""

import dataclasses

from conftest import run_batch, run_code

RESULT_FIELDS = {"sub_id", "success", "run_success", "cost", "stdout", "stderr", "reason"}


def test_ping(http):
    resp = http.get("/ping")
    assert resp.status_code == 200 and resp.json() == "pong"


def test_run_returns_public_fields_and_keeps_sub_id(http):
    r = run_code(http, "print(input()[::-1])", stdin="abc", sub_id="my-id-1")
    assert set(r) == RESULT_FIELDS
    assert r["sub_id"] == "my-id-1"
    assert (r["success"], r["run_success"], r["reason"]) == (True, True, "")
    assert r["stdout"] == "cba\n" and r["stderr"] == ""
    assert 0 < r["cost"] < 3


def test_missing_sub_id_gets_one(http):
    r = http.post("/run", json={"type": "python", "solution": "pass"}).json()
    assert isinstance(r["sub_id"], str) and len(r["sub_id"]) >= 32


def test_nonzero_exit_is_not_run_success(http):
    r = run_code(http, "import sys\nprint('partial')\nraise ValueError('boom')")
    assert r["run_success"] is False and r["success"] is False and r["reason"] == ""
    assert r["stdout"] == "partial\n"
    assert "ValueError: boom" in r["stderr"]
    assert "runner.py" not in r["stderr"], "the harness frame must not show in tracebacks"
    assert run_code(http, "import sys; sys.exit(3)")["run_success"] is False
    assert run_code(http, "import sys; sys.exit(0)")["run_success"] is True


def test_expected_output_sets_success(http):
    ok = run_code(http, "print(6 * 7)", expected_output="42")
    bad = run_code(http, "print(6 * 7)", expected_output="41")
    assert (ok["success"], ok["run_success"]) == (True, True)
    assert (bad["success"], bad["run_success"]) == (False, True)


def test_batches_keep_order(http):
    codes = [f"print({i} * {i})" for i in range(12)]
    for path in ("/run/batch", "/run/long-batch"):
        results = run_batch(http, codes, path)
        assert [r["stdout"] for r in results] == [f"{i * i}\n" for i in range(12)]
        assert all(set(r) == RESULT_FIELDS for r in results)


def test_batch_sub_id_echoed(http):
    body = {"sub_id": "batch-7", "type": "batch", "submissions": [{"type": "python", "solution": "print(1)"}]}
    assert http.post("/run/batch", json=body).json()["sub_id"] == "batch-7"


def test_judge_endpoints_omit_output(http):
    one = http.post("/judge", json={"type": "python", "solution": "print(2)", "expected_output": "2"}).json()
    assert set(one) == RESULT_FIELDS - {"stdout", "stderr"} and one["success"] is True
    body = {"type": "batch", "submissions": [{"type": "python", "solution": "print(2)", "expected_output": "3"}]}
    for path in ("/judge/batch", "/judge/long-batch"):
        (r,) = http.post(path, json=body).json()["results"]
        assert set(r) == RESULT_FIELDS - {"stdout", "stderr"}
        assert (r["success"], r["run_success"]) == (False, True)


def test_cpp_compiles_and_runs(http):
    code = "#include <iostream>\nint main(){int a,b;std::cin>>a>>b;std::cout<<a+b<<std::endl;}"
    r = http.post("/run", json={"type": "cpp", "solution": code, "input": "2 40"}).json()
    assert r["run_success"] is True and r["stdout"] == "42\n"
    bad = http.post("/run", json={"type": "cpp", "solution": "int main( {"}).json()
    assert bad["run_success"] is False and "compilation failed" in bad["stderr"]


@dataclasses.dataclass
class ServerStatus:
    """The public code-judge client's model of GET /status: exactly these two fields."""

    queue: int
    num_workers: int


def test_status_has_exactly_the_public_shape(http):
    resp = http.get("/status")
    assert resp.status_code == 200
    status = ServerStatus(**resp.json())  # what the public JudgeClient.get_status() does; extra keys raise
    assert status.queue >= 0 and status.num_workers == 2
    assert set(resp.json()) == {"queue", "num_workers"}
    assert all(type(v) is int for v in resp.json().values())


def test_status_detail_reports_queue_workers_isolation_preload_and_latency(http):
    run_code(http, "print(1)")
    s = http.get("/status/detail").json()
    assert s["queue"] >= 0 and s["num_workers"] == 2
    assert s["workers"]["alive"] == 2 and 0 <= s["workers"]["busy"] <= 2
    assert s["executions"] >= 1
    assert s["latency"]["execution_p50"] > 0 and s["latency"]["execution_p99"] >= s["latency"]["execution_p50"]
    assert s["isolation"]["level"] in ("full", "partial", "rlimits-only")
    tiers = s["preload"]["tiers"]  # the test judge runs the default tiers: stdlib, + numpy, + sympy
    assert len(tiers) == 3 and s["preload"]["workers_with_failures"] == 0
    assert "math" in tiers[0]["loaded"] and "numpy" not in tiers[0]["modules"]
    assert {"numpy", "numpy.linalg"} <= set(tiers[1]["loaded"]) and "sympy" in tiers[2]["loaded"]
    assert all(t["failed"] == {} and t["warmup_error"] is None for t in tiers)


def test_metrics_is_prometheus_text(http):
    run_code(http, "print(1)")
    text = http.get("/metrics").text
    assert "# TYPE code_judge_executions_total counter" in text
    assert "code_judge_workers_alive 2.0" in text
    assert 'code_judge_latency_seconds{kind="execution",quantile="0.50"}' in text


def test_each_job_gets_fresh_random_state(http):
    code = "import random, numpy as np; print(random.random(), np.random.rand())"
    outs = [r["stdout"] for r in run_batch(http, [code] * 4)]
    assert len(set(outs)) == 4, outs


def test_jobs_go_to_the_lightest_zygote_that_preloaded_what_they_name(http):
    probe = "import sys\nprint(('num' + 'py') in sys.modules, ('sym' + 'py') in sys.modules)"
    assert run_code(http, probe)["stdout"] == "False False\n"  # stdlib zygote
    assert run_code(http, probe + "  # numpy")["stdout"] == "True False\n"
    assert run_code(http, probe + "  # sympy")["stdout"] == "True True\n"  # also warmed up
    assert run_code(http, probe + "  # sympy and numpy")["stdout"] == "True True\n"


def test_threads_work_and_are_joined_at_exit_like_python3(http):
    code = """
import threading, time
out = []
t = threading.Thread(target=lambda: out.append(sum(range(10))))
t.start(); t.join()
print(out)
threading.Thread(target=lambda: (time.sleep(0.2), print('late thread'))).start()
"""
    r = run_code(http, code)
    assert r["run_success"] and r["stdout"] == "[45]\nlate thread\n"
