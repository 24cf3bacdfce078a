"""benchmarks/recorded.py: what a benchmark prints reaches the terminal and its results file, and libraries that
silence stdout at the descriptor level (vLLM's `suppress_stdout` calls `sys.stdout.fileno()`) still work inside."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from recorded import recorded  # noqa: E402


def test_recorded_copies_stdout_and_keeps_a_file_descriptor(tmp_path, capfd):
    path = tmp_path / "out" / "result.txt"
    with recorded(str(path)):
        print("| workload | exec/s |")
        print(" " * 80 + "\r", end="")  # a progress bar clearing its line: dropped from the file
        print()
        print()  # a real blank line: kept
        print("done")
        fd = sys.stdout.fileno()
        assert isinstance(fd, int)
        os.fstat(fd)  # a real, open descriptor
        assert sys.stdout.isatty() in (True, False)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and "CPUs" in lines[1]
    assert lines[2:] == ["| workload | exec/s |", "", "done"]
    assert "| workload | exec/s |" in capfd.readouterr().out


def test_recorded_with_no_path_writes_nothing(tmp_path, capsys):
    with recorded(""):
        print("hello")
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().out == "hello\n"
