"""Bad input gets a clear error or a correct result: never a 500, never a crashed worker."""

import json

from conftest import run_batch, run_code

MB = 1024 * 1024


def assert_service_healthy(http):
    assert run_code(http, "print('alive')")["stdout"] == "alive\n"
    assert http.get("/status/detail").json()["workers"]["alive"] == 2


def test_malformed_json_is_422_with_detail(http):
    resp = http.post("/run", content=b'{"type": "python", "solution": ', headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert "json" in json.dumps(resp.json()["detail"]).lower()
    assert http.post("/run/batch", json={"type": "batch", "submissions": []}).status_code == 422
    assert http.post("/run", json={"type": "python"}).status_code == 422  # no solution
    assert http.post("/run", json={"type": "python", "solution": 5}).status_code == 422


def test_unknown_type_fails_alone_in_a_batch(http):
    body = {"type": "batch", "submissions": [
        {"type": "python", "solution": "print(1)"},
        {"type": "math", "solution": "1+1"},
        {"type": "ruby", "solution": "puts 1"},
        {"type": "python", "solution": "print(2)"},
    ]}
    results = http.post("/run/long-batch", json=body).json()["results"]
    assert [r["stdout"] for r in results[::3]] == ["1\n", "2\n"]
    for r in results[1:3]:
        assert r["reason"] == "invalid_input" and "unsupported submission type" in r["stderr"]


def test_multi_megabyte_code(http):
    big_ok = "# " + "x" * (3 * MB) + "\nprint('big ok')"
    assert run_code(http, big_ok)["stdout"] == "big ok\n"
    too_big = "# " + "x" * (5 * MB) + "\nprint(1)"
    r = run_code(http, too_big)
    assert r["reason"] == "invalid_input" and "MAX_CODE_LENGTH" in r["stderr"]
    resp = http.post("/run", json={"type": "python", "solution": "x" * (9 * MB)})
    assert resp.status_code == 413 and "MAX_REQUEST_SIZE" in resp.json()["detail"]
    assert_service_healthy(http)


def test_too_many_submissions_is_413(http):
    body = {"type": "batch", "submissions": [{"type": "python", "solution": "pass"}] * 501}
    resp = http.post("/run/batch", json=body)
    assert resp.status_code == 413 and "MAX_BATCH_SIZE" in resp.json()["detail"]


def test_non_utf8_output_is_replaced_not_fatal(http):
    r = run_code(http, "import sys\nsys.stdout.buffer.write(b'\\xff\\xfeabc\\n')\nsys.stderr.buffer.write(b'\\x80err')")
    assert r["run_success"] is True
    assert r["stdout"] == "\ufffd\ufffdabc\n" and r["stderr"] == "\ufffderr"


def test_output_that_looks_like_internal_markers(http):
    code = r"""
import sys, json, struct
print("@@E")
print("@@D123.0")
print(json.dumps({"i": 0, "r": {"stdout": "forged"}}))
sys.stdout.flush()
sys.stdout.buffer.write(struct.pack(">I", 5) + b'{"a":')
print()
"""
    r = run_code(http, code)
    assert r["run_success"] is True
    assert r["stdout"] == '@@E\n@@D123.0\n{"i": 0, "r": {"stdout": "forged"}}\n\x00\x00\x00\x05{"a":\n'
    assert_service_healthy(http)


def test_nul_bytes_and_lone_surrogates(http):
    r = run_code(http, "print('a\x00b')")
    assert r["reason"] == "invalid_input" and "NUL" in r["stderr"]
    body = '{"type": "python", "solution": "print(len(input()))", "input": "\\ud800x", "sub_id": "\\udcff"}'
    resp = http.post("/run", content=body.encode(), headers={"content-type": "application/json"})
    assert resp.status_code == 200
    r = resp.json()
    assert r["sub_id"] == "\udcff" and r["reason"] == ""
    assert_service_healthy(http)


def test_syntax_error_is_a_normal_failure(http):
    results = run_batch(http, ["def f(:\n  pass", "print(1"])
    for r in results:
        assert r["run_success"] is False and r["reason"] == "" and "SyntaxError" in r["stderr"]
