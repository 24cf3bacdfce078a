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

The clean-up of a job is never on its latency path: the job process reports its exit status on a pipe
before the kernel tears it down, and the zygote answers first. When the worker is idle, the next job
process (a `Spare`) is forked and sandboxed ahead and waits for its job on a pipe, so the fork is off the
latency path too; under load it is forked on demand (see `main`).
"""

from __future__ import annotations

import dataclasses
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
from typing import Optional

from code_judge.worker import runner, sandbox
from code_judge.worker.protocol import read_frame, write_frame

SPARE_IDLE_S = 0.002  # no new job this soon after an answer: fork the next job process ahead

_SIGNAL_HINTS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded (MAX_FILE_SIZE)",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGKILL: "killed (out of memory or by the sandbox)",
}


def _preload(modules: list[str]) -> dict[str, str]:
    """Import `modules`; returns {module: "ErrorType: message"} for those that failed."""
    failed = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - an optional module that is not installed
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


def _module_dirs(modules: list[str]) -> tuple[str, ...]:
    """Where the top-level packages of `modules` live (found, not imported), so the sandbox keeps them."""
    import importlib.util

    dirs = set()
    for top in {m.split(".")[0] for m in modules}:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is not None:
            dirs.update(spec.submodule_search_locations or ())
            if spec.origin and os.path.isabs(spec.origin):
                dirs.add(os.path.dirname(spec.origin))
    return tuple(sorted(dirs))


def _read_text(path: str, max_chars: int) -> str:
    with open(path, "rb") as f:
        data = f.read(max_chars * 4 + 4)
    return data.decode("utf-8", errors="replace")[:max_chars]


def _stdout_matches(path: str, expected: str) -> bool:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace").strip() == expected.strip()


@dataclasses.dataclass
class Spare:
    """A job process forked ahead of time, already sandboxed, blocked until it is sent its job."""

    pid: int
    pidfd: int
    workdir: str
    go_w: int  # the job frame goes here
    done_r: int  # the exit status comes back here, before the process spends time exiting
    reaped: bool = False


class Zygote:
    def __init__(self, settings: dict, iso: sandbox.Isolation, address_space: sandbox.AddressSpace):
        self.s = settings
        self.address_space = address_space
        self.iso = iso
        self.limits = sandbox.Limits(**settings["limits"])
        self.io_dir = tempfile.mkdtemp(prefix="cj-io-")
        self.io = {n: os.path.join(self.io_dir, n) for n in ("stdin", "stdout", "stderr")}
        self.spare: Optional[Spare] = None
        self.used: Optional[Spare] = None

    # -- the job process --------------------------------------------------------------------------
    def _fork_spare(self) -> Spare:
        workdir = tempfile.mkdtemp(prefix="job-", dir="/tmp")
        if self.iso.uid is not None:
            os.chown(workdir, self.iso.uid, self.iso.uid)
        open(self.io["stdin"], "wb").close()
        fds = [os.open(self.io["stdin"], os.O_RDONLY)]
        fds += [os.open(self.io[n], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for n in ("stdout", "stderr")]
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        vm_bytes = self.address_space.size()
        pid = os.fork()
        if pid == 0:
            self._job_main(workdir, fds, go_r, done_w, vm_bytes)
        for fd in (*fds, go_r, done_w):
            os.close(fd)
        return Spare(pid, os.pidfd_open(pid), workdir, go_w, done_r)

    def _job_main(self, workdir: str, fds: list[int], go_r: int, done_w: int, vm_bytes: int) -> None:
        code = 70
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            os.dup2(go_r, 3)
            os.dup2(done_w, 4)  # not inheritable: an exec'ed program closes it, the zygote then waits for exit
            os.closerange(5, 65536)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            env = sandbox.enter_job(self.iso, self.limits, workdir, vm_bytes)
            runner.prepare_python(os.path.join(workdir, "solution.py"), env)
            job = read_frame(3)
            os.close(3)
            source = job["source"]
            if job["type"] == "cpp":
                runner.run_cpp(source, self.s["cpp_compile_command"], self.s["cpp_execute_command"], env,
                               self.limits.time_s)
            elif self.s["python_execute_command"]:
                cmd = self.s["python_execute_command"].format(source=source, workdir=workdir)
                runner.run_command(shlex.split(cmd), env)
            else:
                code = runner.run_python(source)
        except BaseException:  # noqa: BLE001 - report, never return into the server loop
            os.write(2, ("[code judge] sandbox failure:\n" + traceback.format_exc()).encode())
        try:
            os.write(4, str(code).encode())
        finally:
            os._exit(code)

    def _wait(self, spare: Spare, timeout: float) -> tuple[int, bool]:
        """Wait for the job's status (or its exit) with a wall-clock limit: (exit code or -signal, timed_out)."""
        poller = select.poll()
        poller.register(spare.done_r, select.POLLIN)
        poller.register(spare.pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            events = poller.poll(max(0, left) * 1000) if left > 0 else []
            if not events:
                os.kill(spare.pid, signal.SIGKILL)
                return self._reap(spare), True
            for fd, _ in events:
                if fd == spare.done_r:
                    data = os.read(spare.done_r, 16)
                    if data:
                        return int(data), False
                    poller.unregister(spare.done_r)  # exec'ed or died: wait for the exit itself
                else:
                    return self._reap(spare), False

    @staticmethod
    def _reap(spare: Spare) -> int:
        _, status = os.waitpid(spare.pid, 0)
        spare.reaped = True
        return os.waitstatus_to_exitcode(status)

    # -- one job ---------------------------------------------------------------------------------
    def run(self, job: dict) -> dict:
        spare = self.spare or self._fork_spare()
        self.spare, self.used = None, spare
        name = "solution.cpp" if job["type"] == "cpp" else "solution.py"
        source = os.path.join(spare.workdir, name)
        with open(source, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(job["solution"])
        with open(self.io["stdin"], "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(job.get("input") or "")
        start = time.perf_counter()
        write_frame(spare.go_w, {"type": job["type"], "source": source})
        code, timed_out = self._wait(spare, self.limits.time_s)
        cost = time.perf_counter() - start
        limit = self.s["max_output_chars"]
        stderr = _read_text(self.io["stderr"], limit)
        if timed_out or code == -signal.SIGXCPU:
            timed_out = True
            stderr += f"\n[code judge] time limit exceeded ({self.limits.time_s:g} s)"
        elif code < 0 and -code in _SIGNAL_HINTS:
            stderr += f"\n[code judge] {_SIGNAL_HINTS[-code]}"
        expected = job.get("expected_output")
        return {
            "exit_code": code,
            "timed_out": timed_out,
            "cost": cost,
            "stdout": _read_text(self.io["stdout"], limit),
            "stderr": stderr[:limit],
            "matches_expected": None if expected is None else _stdout_matches(self.io["stdout"], expected),
        }

    def close(self) -> None:
        """End the spare and anything left, so that the sandbox namespaces go away with this process."""
        if self.spare is not None:
            os.kill(self.spare.pid, signal.SIGKILL)
            self.used, self.spare = self.spare, None
        self.recycle(fork_next=False)

    def recycle(self, fork_next: bool = True) -> None:
        """After the answer went out: end the used job and all it left, then fork the next spare."""
        used, self.used = self.used, None
        if used is not None:
            if not used.reaped:
                # It reported its status and is exiting; or the job itself wrote to the status pipe and is
                # still running. Either way nothing of it may outlive its answer.
                os.kill(used.pid, signal.SIGKILL)
                self._reap(used)
            sandbox.kill_leftovers(self.iso, used.pid)
            for fd in (used.pidfd, used.go_w, used.done_r):
                os.close(fd)
            shutil.rmtree(used.workdir, ignore_errors=True)
            sandbox.remove_owned_files(self.iso.uid)
        if self.spare is None and fork_next:
            self.spare = self._fork_spare()


def main() -> None:
    # Frames travel on the original stdin/stdout; fds 0/1 then point at /dev/null so that nothing a
    # preloaded module prints can corrupt them.
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the worker decides
    settings = read_frame(fd_in)
    address_space = sandbox.AddressSpace()  # before the sandbox's own /proc hides ours
    try:
        iso = sandbox.isolate_zygote(
            settings["sandbox"], settings["slot"], settings["uid_base"], settings["tmpfs_mb"],
            _module_dirs(settings["preload"]),
        )
    except Exception as exc:  # noqa: BLE001
        write_frame(fd_out, {"ready": False, "error": str(exc)})
        sys.exit(1)
    failed = _preload(settings["preload"])
    warmup_error = None
    if settings.get("warmup"):
        try:
            exec(compile(settings["warmup"], "<warmup>", "exec"), {"__name__": "__warmup__"})
        except Exception as exc:  # noqa: BLE001 - a warm-up is an optimisation, never a reason to stop
            warmup_error = f"{type(exc).__name__}: {exc}"
    preload = {"modules": settings["preload"], "loaded": [m for m in settings["preload"] if m not in failed],
               "failed": failed, "warmup_error": warmup_error}
    os.environ.pop("PYTHONPATH", None)  # jobs start from this environment (see runner.prepare_python)
    gc.collect()
    gc.freeze()  # keep the GC from touching (and so copying) the warm heap in every job
    zygote = Zygote(settings, iso, address_space)
    zygote.recycle()  # the first spare
    write_frame(fd_out, {"ready": True, "pid": os.getpid(), "isolation": iso.as_dict(), "preload": preload})
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
        # Under load the next job is already on its way: fork for it on demand. A spare forked now would
        # share pages with this process while it handles that job, and copy-on-write makes that cost more
        # CPU than it saves. When idle, fork the spare ahead, off the next job's latency path.
        zygote.recycle(fork_next=not select.select([fd_in], [], [], SPARE_IDLE_S)[0])
    zygote.close()


if __name__ == "__main__":
    main()
