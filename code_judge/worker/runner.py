"""What runs inside a forked job process once the sandbox is entered.

`prepare_python` + `run_python` execute the solution in the forked, already warm interpreter, as `python3 solution.py`
would: a fresh `__main__`, `sys.argv`, text stdio on fds 0/1/2, a traceback and exit status 1 on an uncaught
exception, `SystemExit` codes, atexit handlers and non-daemon threads joined at the end.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import types


def _reseed() -> None:
    """Every job is a fork of the same zygote: without this, all of them would draw the same random numbers."""
    import random

    random.seed()
    np_random = sys.modules.get("numpy.random")  # if the job imports it later, it seeds itself
    if np_random is not None:
        np_random.seed(int.from_bytes(os.urandom(4), "little"))


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def prepare_python(path: str, env: dict) -> None:
    """Everything that does not depend on the solution: done while the job process waits for its job."""
    os.environ["HOME"] = env["HOME"]  # the rest of `env` is this process's environment already
    os.environ["TMPDIR"] = env["TMPDIR"]
    _reseed()
    sys.stdin = sys.__stdin__ = open(0, "r", encoding="utf-8", errors="surrogateescape", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False,
                                       buffering=1)
    sys.argv = [path]
    sys.path[0:0] = [os.path.dirname(path)]
    main = types.ModuleType("__main__")
    main.__file__ = path
    sys.modules["__main__"] = main


def run_python(path: str) -> int:
    """Run the solution file in this (prepared) process; returns the exit status python3 would give."""
    main = sys.modules["__main__"]
    with open(path, "rb") as f:
        source = f.read()
    try:
        exec(compile(source, path, "exec"), main.__dict__)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException as exc:  # noqa: BLE001 - a traceback, as the interpreter would print it
        import traceback

        # Drop this harness's own frame so the traceback starts at the solution, as under python3.
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        code = 1
    return _finish(code)


def _finish(code: int) -> int:
    """Interpreter shutdown, in the order CPython does it: threads, atexit, flush."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        code = code or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - e.g. the file size limit was hit
            code = code or 1
    return code


def run_command(argv: list[str], env: dict) -> None:
    """Replace the job process with an external program (cold Python command, a compiled C++ binary)."""
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        os.write(2, f"cannot execute {argv[0]}: {exc}\n".encode())
    os._exit(127)


def run_cpp(source_path: str, compile_cmd: str, execute_cmd: str, env: dict, timeout: float) -> None:
    exe = os.path.join(os.path.dirname(source_path), "solution")
    fmt = dict(source=source_path, exe=exe, workdir=os.path.dirname(source_path))
    try:
        proc = subprocess.run(
            shlex.split(compile_cmd.format(**fmt)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        os.write(2, f"compilation failed: {exc}\n".encode())
        os._exit(1)
    if proc.returncode != 0:
        os.write(2, b"compilation failed:\n" + proc.stdout)
        os._exit(1)
    run_command(shlex.split(execute_cmd.format(**fmt)), env)
