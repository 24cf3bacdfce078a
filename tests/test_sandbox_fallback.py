"""Where the kernel refuses namespaces (plain Docker), the sandbox falls back and says so; strict refuses."""

import errno
import multiprocessing as mp


from code_judge.worker import sandbox


def _isolate_with_namespaces_refused(mode: str, queue) -> None:
    def refuse(flags):
        raise OSError(errno.EPERM, "Operation not permitted")

    sandbox.unshare = refuse  # this child process only
    try:
        queue.put(sandbox.isolate_zygote(mode, slot=900, uid_base=300000, tmpfs_mb=16).as_dict())
    except RuntimeError as exc:
        queue.put(str(exc))


def isolate_in_child(mode: str):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_isolate_with_namespaces_refused, args=(mode, queue))
    proc.start()
    answer = queue.get(timeout=60)
    proc.join(60)
    return answer


def test_auto_mode_falls_back_and_warns():
    iso = isolate_in_child("auto")
    assert (iso["network"], iso["mount"], iso["pid"]) == (False, False, False)
    assert iso["level"] in ("partial", "rlimits-only") and iso["level"] != "full"
    warnings = " ".join(iso["warnings"])
    for layer in ("network", "mount", "pid"):
        assert f"no {layer} isolation" in warnings


def test_strict_mode_refuses_to_start():
    answer = isolate_in_child("strict")
    assert isinstance(answer, str) and answer.startswith("SANDBOX=strict but") and "no network isolation" in answer


def test_isolation_levels():
    assert sandbox.Isolation(network=True, mount=True, pid=True, uid=5).level == "full"
    assert sandbox.Isolation(network=True).level == "partial"
    assert sandbox.Isolation().level == "rlimits-only"
