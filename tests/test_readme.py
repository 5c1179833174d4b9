"""The README's set-up section, as CI reads it: two bash blocks, the main job and the tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_extracts_the_two_set_up_commands() -> None:
    """.ci/run runs exactly these two blocks; a README edit that breaks the pattern fails here."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Set up.*?(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Set up' section"
    blocks = [b.strip() for b in re.findall(r"```bash\n(.*?)```", section.group(0), re.S)]
    assert len(blocks) == 2
    main, tests = blocks
    assert main.startswith("python3 -m venv .venv") and main.endswith("tlbench sweep")
    assert tests.startswith("python3 -m venv .venv") and tests.endswith("pytest")
    script = (ROOT / ".ci" / "run").read_text()
    assert "readme_command 0" in script and "readme_command 1" in script


def test_ci_script_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0
