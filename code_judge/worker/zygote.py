"""The fork server: a warm Python that forks one sandboxed process per submission.

A fresh `python3` plus `import numpy, sympy` costs ~0.4 s of CPU here; a fork of this already warm process
costs a few milliseconds. The worker (`executor.py`) starts one zygote per worker slot with an *exec'ed,
minimal environment* (so no secret is even in its memory), sends it the limits once, then one frame per job:

    worker -> zygote   {"type": "python", "solution": "print(1+1)", "input": "", "expected_output": null}
    zygote -> worker   {"exit_code": 0, "timed_out": false, "cost": 0.004, "stdout": "2\\n", "stderr": "",
                        "matches_expected": null}

Each job gets a fresh working dir owned by the sandbox uid, stdin from a file, stdout/stderr into files
(so a flood cannot block a pipe; the file size limit ends it), and a wall-clock timer that also catches
sleeping code. Afterwards every process the job left is killed and its files are removed.
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback

from code_judge.worker import runner, sandbox
from code_judge.worker.protocol import read_frame, write_frame

_SIGNAL_HINTS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded (MAX_FILE_SIZE)",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGKILL: "killed (out of memory or by the sandbox)",
}


def _preload(modules: list[str]) -> list[str]:
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional module that is not installed
            failed.append(name)
    return failed


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """Wait for the job with a wall-clock limit; returns (exit code or -signal, timed_out)."""
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        timed_out = not poller.poll(timeout * 1000)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), timed_out


def _read_text(path: str, max_chars: int) -> str:
    with open(path, "rb") as f:
        data = f.read(max_chars * 4 + 4)
    return data.decode("utf-8", errors="replace")[:max_chars]


def _stdout_matches(path: str, expected: str) -> bool:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace").strip() == expected.strip()


class Zygote:
    def __init__(self, settings: dict, iso: sandbox.Isolation):
        self.s = settings
        self.iso = iso
        self.limits = sandbox.Limits(**settings["limits"])
        self.io_dir = tempfile.mkdtemp(prefix="cj-io-")

    def _open_io(self, stdin: str) -> tuple[int, int, int]:
        paths = [os.path.join(self.io_dir, n) for n in ("stdin", "stdout", "stderr")]
        with open(paths[0], "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(stdin)
        fds = [os.open(paths[0], os.O_RDONLY)]
        fds += [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for p in paths[1:]]
        return fds[0], fds[1], fds[2]

    def _job_main(self, job: dict, workdir: str, source: str, fds: tuple[int, int, int]) -> None:
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            os.closerange(3, 65536)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            env = sandbox.enter_job(self.iso, self.limits, workdir)
            if job["type"] == "cpp":
                runner.run_cpp(source, self.s["cpp_compile_command"], self.s["cpp_execute_command"], env,
                               self.limits.time_s)
            elif self.s["python_execute_command"]:
                cmd = self.s["python_execute_command"].format(source=source, workdir=workdir)
                runner.run_command(shlex.split(cmd), env)
            else:
                runner.run_python_inline(source, env)
        except BaseException:  # noqa: BLE001 - report, never return into the server loop
            os.write(2, ("[code judge] sandbox setup failed:\n" + traceback.format_exc()).encode())
        os._exit(70)

    def run(self, job: dict) -> dict:
        workdir = tempfile.mkdtemp(prefix="job-", dir="/tmp")
        if self.iso.uid is not None:
            os.chown(workdir, self.iso.uid, self.iso.uid)
        source = os.path.join(workdir, "solution.cpp" if job["type"] == "cpp" else "solution.py")
        with open(source, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(job["solution"])
        fds = self._open_io(job.get("input") or "")
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            self._job_main(job, workdir, source, fds)
        for fd in fds:
            os.close(fd)
        code, timed_out = _wait(pid, self.limits.time_s)
        cost = time.perf_counter() - start
        sandbox.kill_leftovers(self.iso, pid)
        out_path, err_path = (os.path.join(self.io_dir, n) for n in ("stdout", "stderr"))
        limit = self.s["max_output_chars"]
        stderr = _read_text(err_path, limit)
        if timed_out or code == -signal.SIGXCPU:
            timed_out = True
            stderr += f"\n[code judge] time limit exceeded ({self.limits.time_s:g} s)"
        elif code < 0 and -code in _SIGNAL_HINTS:
            stderr += f"\n[code judge] {_SIGNAL_HINTS[-code]}"
        expected = job.get("expected_output")
        result = {
            "exit_code": code,
            "timed_out": timed_out,
            "cost": cost,
            "stdout": _read_text(out_path, limit),
            "stderr": stderr[:limit],
            "matches_expected": None if expected is None else _stdout_matches(out_path, expected),
        }
        shutil.rmtree(workdir, ignore_errors=True)
        sandbox.remove_owned_files(self.iso.uid)
        return result


def main() -> None:
    # Frames travel on the original stdin/stdout; fds 0/1 then point at /dev/null so that nothing a
    # preloaded module prints can corrupt them.
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the worker decides
    settings = read_frame(fd_in)
    try:
        iso = sandbox.isolate_zygote(
            settings["sandbox"], settings["slot"], settings["uid_base"], settings["tmpfs_mb"]
        )
    except Exception as exc:  # noqa: BLE001
        write_frame(fd_out, {"ready": False, "error": str(exc)})
        sys.exit(1)
    failed = _preload(settings["preload"])
    gc.collect()
    gc.freeze()  # keep the GC from touching (and so copying) the warm heap in every job
    zygote = Zygote(settings, iso)
    write_frame(fd_out, {"ready": True, "pid": os.getpid(), "isolation": iso.as_dict(), "preload_failed": failed})
    while True:
        try:
            job = read_frame(fd_in)
        except EOFError:
            break
        try:
            result = zygote.run(job)
        except Exception:  # noqa: BLE001
            result = {"error": traceback.format_exc()}
        write_frame(fd_out, result)


if __name__ == "__main__":
    main()
