"""Run-file writes: folders created, atomic replacement, one lock per run, paths kept inside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tlbench import files
from tlbench.errors import ConfigError


def test_writes_create_their_folder(tmp_path: Path) -> None:
    files.write_text(tmp_path / "a" / "b" / "x.txt", "hello")
    files.save_torch({"w": torch.ones(2)}, tmp_path / "ckpt" / "deep" / "m.pt")
    files.append_text(tmp_path / "c" / "rows.jsonl", "1\n")
    files.append_text(tmp_path / "c" / "rows.jsonl", "2\n")
    assert (tmp_path / "a" / "b" / "x.txt").read_text() == "hello"
    assert torch.load(tmp_path / "ckpt" / "deep" / "m.pt")["w"].sum() == 2
    assert (tmp_path / "c" / "rows.jsonl").read_text() == "1\n2\n"
    assert not list(tmp_path.rglob("*.tmp"))  # no temp file left behind


def test_a_file_in_the_way_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot create the directory .*results/run"):
        files.make_dir(blocker / "run")
    with pytest.raises(ConfigError, match="cannot"):
        files.write_text(blocker / "run" / "manifest.json", "{}")


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/etc/passwd"])
def test_names_that_leave_the_root_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="outside"):
        files.inside(tmp_path, name)
    assert files.inside(tmp_path, "default", "run1") == tmp_path / "default" / "run1"


def test_a_second_process_cannot_take_a_locked_run(tmp_path: Path) -> None:
    code = (
        "import sys; from tlbench import files\n"
        "try:\n    files.RunLock(sys.argv[1]).__enter__()\n"
        "except Exception as e:\n    print(e); sys.exit(3)\n"
    )
    with files.RunLock(tmp_path):
        held = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert held.returncode == 3 and "in use by tlbench pid" in held.stdout
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert free.returncode == 0, free.stdout + free.stderr  # released on exit
