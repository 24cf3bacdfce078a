"""Linux isolation for executed code: namespaces, a dedicated uid, rlimits and a clean environment.

The fork server (`zygote.py`) calls `isolate_zygote()` once when it starts, then `enter_job()` in every
forked job process. What each layer buys, and what happens when the kernel refuses it:

| layer | how | without it |
|---|---|---|
| network | the zygote unshares an empty network namespace (loopback down); jobs inherit it | jobs can reach the network, Redis and the API (warning) |
| mount | private tmpfs on /tmp, /var/tmp, /dev/shm, wiped after every job; the Python install and import paths under them are bound back read-only (or the zygote refuses to start); /proc shows only the sandbox | files may persist in the host's /tmp between jobs (warning; the job's own dir is still removed) |
| pid | jobs live in a PID namespace whose init dies with the zygote; they cannot see host processes | jobs see host processes (warning) |
| uid | jobs run as a uid of their own (root only): no capabilities, cannot touch root's files; after a job every process of that uid is killed, so a job cannot leave anything running, `setsid()` or not | jobs keep the worker's user; only the job's process group is killed (warning) |
| rlimits | CPU, address space, processes, file size, open files, no core dumps | always applied |
| environment | jobs start from a fixed minimal environment; the zygote itself was exec'ed with that environment, so /proc/self/environ holds no secrets either | always applied |

The isolation that is active is returned as `Isolation` and reported by `/status/detail` and the worker log.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import fcntl
import os
import resource
import select
import signal
import sys
import time
from typing import Optional

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 0x1000, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str, target: str, fstype: Optional[str], flags: int, data: Optional[str] = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


@dataclasses.dataclass
class Isolation:
    """What protects executed code, as reported by /status/detail."""

    network: bool = False
    mount: bool = False
    pid: bool = False
    uid: Optional[int] = None
    environment: str = "clean"
    rlimits: tuple[str, ...] = ("cpu", "as", "nproc", "fsize", "nofile", "core")
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def level(self) -> str:
        layers = (self.network, self.mount, self.pid, self.uid is not None)
        return "full" if all(layers) else "partial" if any(layers) else "rlimits-only"

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["level"] = self.level
        d["rlimits"] = list(self.rlimits)
        return d


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-job limits; `memory_mb` is added to the address space the job inherits from the zygote."""

    time_s: float
    memory_mb: int
    processes: int
    file_size_mb: int
    open_files: int


def _lock_uid(base: int, slot: int) -> tuple[int, int]:
    """Claim a uid no other sandbox on this host uses, by holding an flock for the zygote's lifetime."""
    lock_dir = "/run/rstar2-code-judge" if os.access("/run", os.W_OK) else "/var/tmp/rstar2-code-judge"
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    for k in range(1000):
        uid = base + slot + 1000 * k
        fd = os.open(f"{lock_dir}/uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return uid, fd
        except BlockingIOError:
            os.close(fd)
    raise RuntimeError("no free sandbox uid")


def _closed_ancestor(path: str) -> Optional[str]:
    """The first directory on the way to `path` that other users cannot enter (e.g. /root, mode 0700)."""
    parts = os.path.abspath(path).split("/")[1:]
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        try:
            st = os.stat(d)
        except OSError:
            return None
        if not st.st_mode & 0o001:
            return d
    return None


class SandboxError(RuntimeError):
    """The sandbox cannot be set up safely in any mode; the zygote refuses to start (never weakens)."""


def python_paths(extra: tuple[str, ...] = ()) -> list[str]:
    """Directories a job's interpreter must read: the install prefixes, every import path and `extra` (e.g.
    where preloaded modules live), each as given and resolved through symlinks."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p)
    paths.update(extra)
    found = set()
    for p in paths:
        if os.path.isdir(p):
            found.update((os.path.abspath(p), os.path.realpath(p)))
    return sorted(found)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


_HOW_TO = ("install Python (or the venv) outside /tmp, /var/tmp and /dev/shm (or at least below them, not as "
           "one of them), or set SANDBOX=none to run executed code without namespaces")


def _private_mounts(tmpfs_mb: int, extra: tuple[str, ...] = ()) -> None:
    """Private temp dirs; directories other users cannot enter (e.g. /root) are covered by an empty tmpfs
    too. Every Python directory under a covered one (a venv in /tmp, an install in /root) is bound back
    read-only at the same path, so a job imports what the worker has but sees nothing else there.

    Once the first mount is made, a failure raises `SandboxError`: a half-built sandbox must not run code.
    """
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    needed = python_paths(extra)
    covers = [d for d in PRIVATE_DIRS if os.path.isdir(d)]
    for p in needed:
        if not any(_under(p, c) for c in covers):
            anc = _closed_ancestor(p)
            if anc is not None and anc != "/":
                covers.append(anc)
    covers = sorted(set(covers), key=len)
    inside = [p for p in needed if p in covers]
    if inside:
        raise SandboxError(f"a Python path is a directory the sandbox makes private: {', '.join(inside)}; "
                           f"{_HOW_TO}")
    targets: list[str] = []
    for p in needed:  # sorted: a directory comes before everything under it
        if any(_under(p, c) for c in covers) and not any(_under(p, t) for t in targets):
            targets.append(p)
    try:
        # Hold every directory to bind back by an fd before covering it; bind from /proc/self/fd/N afterwards.
        fds = [(t, os.open(t, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) for t in targets]
        old_umask = os.umask(0o022)
        try:
            for c in covers:
                os.makedirs(c, exist_ok=True)
                private = c in PRIVATE_DIRS
                mount("tmpfs", c, "tmpfs", MS_NOSUID | MS_NODEV,
                      f"size={tmpfs_mb}m,mode=1777" if private else "size=1m,mode=0755")
            for t, fd in fds:
                os.makedirs(t, exist_ok=True)
                mount(f"/proc/self/fd/{fd}", t, None, MS_BIND | MS_REC)
                noexec = MS_NOEXEC if os.statvfs(t).f_flag & os.ST_NOEXEC else 0  # keep what the host had
                mount("none", t, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | noexec)
                os.close(fd)
        finally:
            os.umask(old_umask)
    except OSError as exc:
        raise SandboxError(f"could not bind the Python install back into the sandbox's private mounts "
                           f"({exc}); {_HOW_TO}") from exc
    hidden = [p for p in needed if not os.path.isdir(p)]
    if hidden:
        raise SandboxError(f"the sandbox hides Python paths the worker uses: {', '.join(hidden)}; {_HOW_TO}")


def _init_loop(mount_proc: bool, ready_fd: int, lifeline_fd: int) -> None:
    """PID 1 of the sandbox PID namespace: mount its /proc, reap orphans, exit when the zygote is gone.

    The kernel may not deliver a parent-death signal to a namespace init, so the zygote's death is seen as
    EOF on `lifeline_fd`. When this process exits, the kernel kills everything left in the namespace.
    """
    try:
        os.closerange(3, min(ready_fd, lifeline_fd))
        os.closerange(max(ready_fd, lifeline_fd) + 1, 65536)
        if mount_proc:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        poller = select.poll()
        poller.register(lifeline_fd, select.POLLIN | select.POLLHUP)
        poller.register(wake_r, select.POLLIN)
        os.write(ready_fd, b"1")
        os.close(ready_fd)
        while True:
            for fd, _ in poller.poll():
                if fd == lifeline_fd:
                    return
                os.read(wake_r, 4096)
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
    finally:
        os._exit(0)


def isolate_zygote(mode: str, slot: int, uid_base: int, tmpfs_mb: int, extra_paths: tuple[str, ...] = ()) -> Isolation:
    """Set up the namespaces the zygote and all its jobs share. Must run before any thread exists.

    `extra_paths`: directories besides the Python install and sys.path that jobs must read (where the
    preloaded modules were found). A `SandboxError` (the install cannot be made visible) ends every mode.

    mode: "auto" (take what the kernel allows, warn about the rest), "strict" (raise unless all layers are
    active) or "none" (rlimits and a clean environment only).
    """
    iso = Isolation()
    if mode == "none":
        iso.warnings.append("SANDBOX=none: executed code runs without namespaces, as the worker's user")
        return iso
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the worker

    def attempt(name: str, fn) -> bool:
        try:
            fn()
            return True
        except OSError as exc:
            iso.warnings.append(f"no {name} isolation: {exc.strerror or exc}")
            return False

    if os.geteuid() == 0:
        iso.uid, _ = _lock_uid(uid_base, slot)
    else:
        iso.warnings.append("not running as root: executed code keeps the worker's uid")
    iso.mount = attempt("mount", lambda: _private_mounts(tmpfs_mb, extra_paths))
    if iso.uid is not None and not iso.mount and any(_closed_ancestor(p) for p in python_paths(extra_paths)):
        iso.warnings.append("the Python install is not readable by other users and no mount namespace is "
                            "allowed: executed code keeps the worker's uid")
        iso.uid = None
    iso.network = attempt("network", lambda: unshare(CLONE_NEWNET))
    if attempt("pid", lambda: unshare(CLONE_NEWPID)):
        ready_r, ready_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()  # the zygote keeps the write end open until it dies
        if os.fork() == 0:
            os.close(lifeline_w)
            _init_loop(mount_proc=iso.mount, ready_fd=ready_w, lifeline_fd=lifeline_r)
        os.close(ready_w)
        os.close(lifeline_r)
        iso.pid = os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        if not iso.pid:
            iso.warnings.append("no pid isolation: the sandbox init failed to start")
    if mode == "strict" and iso.warnings:
        raise RuntimeError("SANDBOX=strict but " + "; ".join(iso.warnings) + ". Run the workers as root where "
                           "the kernel allows namespaces (e.g. docker run --privileged, or --cap-add SYS_ADMIN "
                           "with seccomp/AppArmor unconfined), or set SANDBOX=auto to accept weaker isolation")
    return iso


class AddressSpace:
    """Reads this process's address-space size through a /proc fd opened before the sandbox's /proc
    replaced it (in there, /proc/self does not resolve for the zygote). A job inherits the size at fork."""

    def __init__(self):
        self.fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self.page = os.sysconf("SC_PAGE_SIZE")

    def size(self) -> int:
        return int(os.pread(self.fd, 64, 0).split()[0]) * self.page


def enter_job(iso: Isolation, limits: Limits, workdir: str, vm_bytes: int) -> dict:
    """In a freshly forked job process: apply limits, drop privileges. Returns the job's environment.

    `vm_bytes` is the address space inherited from the zygote; the job may allocate `limits.memory_mb` more.
    The environment is the zygote's own (exec'ed minimal, see executor.zygote_environment) with HOME and
    TMPDIR pointing at the job's private working dir.
    """
    os.setsid()
    os.chdir(workdir)
    mb = 1024 * 1024
    cpu = int(limits.time_s) + 1
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    as_limit = vm_bytes + limits.memory_mb * mb
    resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb * mb, limits.file_size_mb * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    if iso.uid is not None:
        # NPROC counts processes per real uid, so it is only meaningful with a uid of our own.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        os.setgroups([])
        os.setresgid(iso.uid, iso.uid, iso.uid)
        os.setresuid(iso.uid, iso.uid, iso.uid)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the uid change, so set it after
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    return dict(os.environ, HOME=workdir, TMPDIR=workdir)


def _has_processes(iso: Isolation) -> bool:
    """Does any process of the sandbox uid exist? With the sandbox's own /proc, any pid but init counts."""
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    if iso.pid and iso.mount:
        return any(p != "1" for p in pids)
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == iso.uid:
                            return True
                        break
        except OSError:
            continue
    return False


def kill_leftovers(iso: Isolation, job_pid: int) -> None:
    """Kill every process the job left behind: all of the sandbox uid's, else the job's process group."""
    if iso.uid is not None:
        # kill(-1) as the sandbox uid reaches exactly that uid's processes. Repeat until none is left: one
        # may fork while the kill goes round, and killed ones stay visible until the sandbox init reaps them.
        for _ in range(2000):
            os.setresuid(iso.uid, iso.uid, 0)
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            finally:
                os.setresuid(0, 0, 0)
            if not _has_processes(iso):
                return
            time.sleep(0.001)
        raise RuntimeError(f"processes of sandbox uid {iso.uid} survive SIGKILL")
    try:
        os.killpg(job_pid, signal.SIGKILL)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.EPERM):
            raise


def remove_owned_files(uid: Optional[int]) -> None:
    """Remove the files and dirs that the sandbox uid left at the top of the shared temp dirs."""
    import shutil

    for d in PRIVATE_DIRS:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if uid is None or e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass
