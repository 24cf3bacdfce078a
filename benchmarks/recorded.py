"""Keep what a benchmark prints: `recorded(path)` copies stdout into a results file while it runs.

Every README figure comes from a file under benchmarks/results/ written by the benchmark that produced it, so
each benchmark takes `--results PATH` (default: benchmarks/results/<its name>.txt; `--results ''` writes
nothing) and runs its main body inside `with recorded(args.results):`. The file starts with the command line,
the date and the machine's CPU count, then holds exactly what the run printed to stdout.

    with recorded("benchmarks/results/judge_throughput.txt"):
        print("| workload | exec/s |")          # on the terminal and in the file
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from pathlib import Path
from typing import Iterator, Optional, TextIO

RESULTS = Path(__file__).parent / "results"


def default_path(script: str) -> str:
    """benchmarks/results/<script's stem>.txt"""
    return str(RESULTS / f"{Path(script).stem}.txt")


class _Tee:
    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def fileno(self) -> int:
        """The terminal's descriptor, for libraries that silence stdout at the fd level (vLLM's
        `suppress_stdout`); what goes there directly bypasses the results file, as it bypasses `print`."""
        return self.streams[0].fileno()

    def isatty(self) -> bool:
        return self.streams[0].isatty()


@contextlib.contextmanager
def recorded(path: Optional[str]) -> Iterator[None]:
    """Inside the block, stdout also goes to `path` (nothing is written when `path` is empty or None)."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        out.write(f"# {' '.join([Path(sys.executable).name, *sys.argv])}\n"
                  f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs\n")
        terminal = sys.stdout
        sys.stdout = _Tee(terminal, out)
        try:
            yield
        finally:
            sys.stdout = terminal
    _drop_blank_frames(Path(path))


def _drop_blank_frames(path: Path) -> None:
    """Remove the lines of only spaces and carriage returns that progress bars leave when they clear
    themselves (a results file is read, not replayed on a terminal)."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip(" \r\n") or line in ("\n", "\r\n")]
    if len(kept) != len(lines):
        path.write_text("".join(kept))
