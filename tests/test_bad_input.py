"""Bad input at every edge (issue 18), one test per kind of input, parametrised over every input of
that kind as the code declares it: every numeric option of every command (walked from the Typer
app), every sweep key (walked from the config records), every data-spec option, every path a
command takes. A new option, key or path is covered without being listed here; one without a
declared bound (tlbench.bounds) or path kind (PATHS below) fails `test_*_declared`.

Each case asserts exit 2, one `error:` line, no traceback, and nothing written; each fails before
any model is built, so the cases take milliseconds.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from committed import committed_run
from typer.testing import CliRunner

from tlbench import bounds
from tlbench.bounds import Bound
from tlbench.cli import app
from tlbench.config import SweepConfig
from tlbench.data.clips import MovingMNIST
from tlbench.data.sources import check_spec
from tlbench.errors import DataError

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands
RUN = committed_run("default")


def annotation(param: Any) -> Any:
    return param.get_runtime_param().annotation


def flag(param: Any) -> str:
    """'--batch-size' for an option, 'RUN_DIR' for an argument."""
    return max(param.opts, key=len) if param.opts[0].startswith("-") else param.name.upper()


def required_args(name: str, skip: str = "") -> list[str]:
    """Dummy values for a command's required parameters (paths that do not exist, model 'tiny')."""
    out: list[str] = []
    for p in COMMANDS[name].params:
        if not p.required or flag(p) == skip:
            continue
        value = "nowhere" if annotation(p) is Path else "tiny"
        out += [value] if not p.opts[0].startswith("-") else [p.opts[0], value]
    return out


def assert_one_error_line(result: Any, *names: str) -> str:
    """Exit 2, exactly one line, `error: ...` naming each of `names`, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def bad_numbers(b: Bound) -> list[str]:
    """Values outside `b`, as text: non-finite, below, above, a fraction for an integer."""
    out = ["nan", "inf", "-inf"]
    if b.low is not None:
        out.append(_fmt(b.low) if b.above else _fmt(b.low - 1))
    if b.high is not None:
        out.append(_fmt(b.high * 2 + 1))
    if b.integer:
        out.append("1.5")
    return out


def good_numbers(b: Bound) -> list[float]:
    """The edges `b` accepts."""
    lo = b.low if b.low is not None else -1.0
    out = [lo + (1 if b.above else 0)] if b.high is None or lo + 1 <= b.high else []
    return out + ([b.high] if b.high is not None else []) + ([lo] if not b.above else [])


# ---- 1. numbers on the command line ----------------------------------------------------------


NAMES = ("--version",)  # a default that reads as a number but is a name ('1.1': TokenLearner 1.1)


def numeric_options() -> list[tuple[str, str]]:
    """(command, option) for every option that takes numbers: int or float typed, a comma list
    whose default is numbers, or one tlbench.bounds declares."""
    out = []
    for name, command in sorted(COMMANDS.items()):
        for p in command.params:
            kind, opt = annotation(p), flag(p)
            if not opt.startswith("-") or kind is bool:
                continue
            default = p.default if isinstance(p.default, str) and opt not in NAMES else ""
            listed = bool(default) and all(_is_number(t) for t in default.split(","))
            if kind in (int, float) or listed or bounds.option_bound(name, opt) is not None:
                out.append((name, opt))
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


NUMERIC = numeric_options()


def test_every_numeric_option_declared() -> None:
    assert len(NUMERIC) > 30  # the walk found them (flops, bench, probe, maps, recommend, ...)
    missing = [f"{c} {o}" for c, o in NUMERIC if bounds.option_bound(c, o) is None]
    assert not missing, f"declare a bound in tlbench.bounds.OPTIONS for {missing}"
    stale = [k for k in bounds.OPTIONS if not any(k in (o, f"{c} {o}") for c, o in NUMERIC)]
    assert not stale, f"tlbench.bounds.OPTIONS names options no command has: {stale}"


CLI_CASES = [
    (c, o, v) for c, o in NUMERIC for v in bad_numbers(bounds.option_bound(c, o) or bounds.FINITE)
]


@pytest.mark.parametrize(("command", "option", "value"), CLI_CASES)
def test_numeric_option_out_of_range(command: str, option: str, value: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    text = f"r={value}" if option == "--param" else value
    result = runner.invoke(app, [command, *required_args(command), f"{option}={text}"])
    assert_one_error_line(result, option)
    assert listing(tmp_path) == set()


@pytest.mark.parametrize(("command", "option"), NUMERIC)
def test_numeric_option_edges_pass(command: str, option: str) -> None:
    b = bounds.option_bound(command, option)
    assert b is not None
    for v in good_numbers(b):
        bounds.check_option(command, option, int(v) if b.integer else v)
        bounds.check_option(command, option, _fmt(v))  # as a comma-list option gets it


# ---- 2. empty values and lists on the command line -------------------------------------------


TEXT_OPTIONS = [(name, flag(p)) for name, c in sorted(COMMANDS.items()) for p in c.params
                if annotation(p) in (str, list[str]) and flag(p).startswith("-")]  # fmt: skip


@pytest.mark.parametrize("value", ["", ",", " , "])
@pytest.mark.parametrize(("command", "option"), TEXT_OPTIONS)
def test_empty_text_option(command: str, option: str, value: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, [command, *required_args(command, skip=option), f"{option}={value}"]
    )
    assert_one_error_line(result, option)
    assert listing(tmp_path) == set()


# ---- 1, 2, 9. sweep keys (sweep files and --set) ---------------------------------------------


def sweep_keys(cls: type = SweepConfig, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, type hint) of every leaf field of the config records."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += sweep_keys(hint, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, hint))
    return out


def _leaves(hint: Any) -> set[Any]:
    args = typing.get_args(hint)
    return {hint} if not args else {x for a in args for x in _leaves(a)} | {typing.get_origin(hint)}


KEYS = sweep_keys()
NUMERIC_KEYS = [(k, h) for k, h in KEYS if _leaves(h) & {int, float}]


def test_every_numeric_sweep_key_declared() -> None:
    assert len(NUMERIC_KEYS) > 20
    missing = [k for k, _ in NUMERIC_KEYS if k not in bounds.SWEEP]
    assert not missing, f"declare a bound in tlbench.bounds.SWEEP for {missing}"
    assert set(bounds.SWEEP) <= {k for k, _ in NUMERIC_KEYS}


def _toml(key: str, hint: Any, value: str) -> tuple[str, str]:
    """(the key as --set takes it, the value as TOML): a list key gets a one-item list."""
    if key == "grid.options":
        return "grid.options.tome_r.r", f"[{value}]"
    return key, f"[{value}]" if tuple in _leaves(hint) else value


SWEEP_CASES = [(k, h, v) for k, h in NUMERIC_KEYS for v in [*bad_numbers(bounds.SWEEP[k]), '"abc"']]


@pytest.mark.parametrize("via", ["set", "file"])
@pytest.mark.parametrize(
    ("key", "hint", "value"), SWEEP_CASES, ids=[f"{k}={v}" for k, _, v in SWEEP_CASES]
)
def test_sweep_key_out_of_range(key: str, hint: Any, value: str, via: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    name, text = _toml(key, hint, value)
    if via == "set":
        args = ["--set", f"{name}={text}"]
    else:
        *section, last = name.split(".")
        Path("s.toml").write_text(
            (f"[{'.'.join(section)}]\n" if section else "") + f"{last} = {text}\n"
        )
        args = ["s.toml"]
    before = listing(tmp_path)
    assert_one_error_line(runner.invoke(app, ["sweep", *args, "--out", "out"]), key)
    assert listing(tmp_path) == before  # no run directory


EMPTY_CASES = [(k, "[]") for k, h in KEYS if tuple in _leaves(h) and k not in bounds.EMPTY_OK]
EMPTY_CASES += [(k, '[""]') for k, h in KEYS if tuple in _leaves(h) and str in _leaves(h)]
EMPTY_CASES += [(k, '" "') for k, h in KEYS if str in _leaves(h) and tuple not in _leaves(h)]


@pytest.mark.parametrize(("key", "value"), EMPTY_CASES)
def test_sweep_key_empty(
    key: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_error_line(
        runner.invoke(app, ["sweep", "--set", f"{key}={value}", "--out", "out"]), key
    )
    assert listing(tmp_path) == set()


def test_issue_cases_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's class 9: refused in one line before a run directory exists."""
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for args in (["--set", "seed=-1"], ["--set", 'quality.probe_data=[""]'], ["--device", "cuda"],
                 ["--set", 'speed.device="cuda:3"'], ["--positions", ""], ["--model", ","]):  # fmt: skip
        assert_one_error_line(runner.invoke(app, ["sweep", "--out", "out", *args]))
        assert listing(tmp_path) == set(), args


# ---- 1. data-spec options ---------------------------------------------------------------------


def test_every_spec_option_declared() -> None:
    assert {f.name for f in dataclasses.fields(MovingMNIST)} == set(bounds.MOVING_MNIST)


SPEC_CASES = [
    (k, v) for k, b in bounds.MOVING_MNIST.items() for v in [*bad_numbers(b), "x", "1e999"]
]
SPEC_CASES += [("frames", "64,size=64")]  # each in range, their product (memory) not


@pytest.mark.parametrize(("option", "value"), SPEC_CASES)
def test_spec_option_out_of_range(
    option: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = f"moving_mnist:{option}={value}"
    with pytest.raises(DataError) as info:
        check_spec(spec)
    assert "\n" not in str(info.value) and "moving_mnist" in str(info.value)
    monkeypatch.chdir(tmp_path)
    for key in ("quality.train_data", "quality.probe_data"):
        text = f'"{spec}"' if key.endswith("train_data") else f'["{spec}"]'
        assert_one_error_line(
            runner.invoke(app, ["sweep", "--set", f"{key}={text}", "--out", "out"]), "moving_mnist"
        )
    probe = ["probe", "-m", "vivit_cpu", "--train-data", spec, "--probe-data", "moving_mnist"]
    assert_one_error_line(runner.invoke(app, probe), "moving_mnist")  # before the budget estimate
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("option", sorted(bounds.MOVING_MNIST))
def test_spec_option_edges_pass(option: str) -> None:
    b = bounds.MOVING_MNIST[option]
    for v in good_numbers(b):
        if option in ("frames", "size") and v > 64:
            continue  # with the other at its default the product bound applies (tested above)
        check_spec(f"moving_mnist:{option}={int(v) if b.integer else v}")


# ---- 4. files and folders: every path a command takes ----------------------------------------

# What each path parameter is: a file read ("file"), a run directory ("run"), a folder of images
# ("images"), a folder written ("outdir") or a file stem written ("stem"). The args put it in a
# call that is otherwise valid, with X where the path goes.
CKPT = ["-m", "tiny", "--position", "0.5", "--tokens", "4"]
PATHS: dict[tuple[str, str], tuple[str, list[str]]] = {
    ("sweep", "CONFIG"): ("file", ["sweep", "X", "--out", "out"]),
    ("sweep", "--out"): ("outdir", ["sweep", "--out", "X", "--set", "quality.enabled=false"]),
    ("sweep", "--resume"): ("run", ["sweep", "--resume", "X"]),
    ("plot", "RUN_DIR"): ("run", ["plot", "X"]),
    ("plot", "--out"): ("outdir", ["plot", "RUN", "--out", "X"]),
    ("report", "--out"): ("stem", ["report", "RUN", "--out", "X"]),
    ("bench", "--figure"): ("stem", ["bench", "-m", "tiny", "--positions", "0.5", "--rounds", "1", "--figure", "X"]),
    ("check", "--baseline"): ("file", ["check", "--baseline", "X"]),
    ("compare", "RUN"): ("run", ["compare", "X", "RUN"]),
    ("compare", "REFERENCE"): ("run", ["compare", "RUN", "X"]),
    ("recommend", "RUN_DIR"): ("run", ["recommend", "X", "--max-gflops", "1"]),
    ("status", "RUN_DIR"): ("run", ["status", "X"]),
    ("maps", "RUN_DIR"): ("run", ["maps", "X", "--variant", "p0.5-s8"]),
    ("maps", "--checkpoint"): ("file", ["maps", "--checkpoint", "X", *CKPT, "--out", "m"]),
    ("maps", "--images"): ("images", ["maps", "--checkpoint", "CKPT", *CKPT, "--images", "X"]),
    ("maps", "--out"): ("stem", ["maps", "--checkpoint", "CKPT", *CKPT, "--out", "X"]),
    ("probe", "--checkpoint"): (
        "file",
        ["probe", "-m", "tiny", "--checkpoint", "X", "--steps", "0"],
    ),
    ("probe", "--checkpoint-dir"): (
        "outdir",
        [
            "probe",
            "-m",
            "tiny",
            "--checkpoint-dir",
            "X",
            "--steps",
            "1",
            "--train-data",
            "digits",
            "--probe-data",
            "digits",
        ],
    ),
    ("compare-models", "--out"): (
        "outdir",
        ["compare-models", "-m", "tiny", "--positions", "0.5", "--tokens", "4", "--out", "X"],
    ),
}
SHAPES = {  # what a bad path can be, per kind
    "file": ["under_file", "directory", "binary", "missing"],
    "run": ["under_file", "binary", "empty_dir", "binary_manifest", "cut_manifest", "missing"],
    "images": ["under_file", "binary", "empty_dir", "missing"],
    "outdir": ["under_file", "binary"],
    "stem": ["under_file"],
}


def test_every_path_declared() -> None:
    found = {(n, flag(p)) for n, c in COMMANDS.items() for p in c.params if annotation(p) is Path}
    assert found == set(PATHS), f"declare each path's kind in PATHS: {found ^ set(PATHS)}"


def make_bad(shape: str, root: Path) -> Path:
    (root / "a_file").write_text("x\n")
    path = {"under_file": root / "a_file" / "x", "directory": root / "a_dir", "binary": root / "bin.dat",
            "empty_dir": root / "a_dir", "missing": root / "missing", "binary_manifest": root / "run1",
            "cut_manifest": root / "run2"}[shape]  # fmt: skip
    if shape in ("directory", "empty_dir"):
        path.mkdir()
    elif shape == "binary":
        path.write_bytes(b"\xff\xfe\x00\x81garbage")
    elif shape == "binary_manifest":
        path.mkdir()
        (path / "manifest.json").write_bytes(b'{"config": "\xff\xfe"}')
    elif shape == "cut_manifest":
        path.mkdir()
        (path / "manifest.json").write_text((RUN / "manifest.json").read_text()[:300])
    return path


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of the committed run (no figures) and a tiny TokenLearner checkpoint for maps."""
    import torch

    from tlbench.variants import build_model, make_variant

    root = tmp_path_factory.mktemp("inputs")
    run = root / "run"
    run.mkdir()
    for name in ("manifest.json", "rows.jsonl", "units.jsonl", "results.csv"):
        shutil.copy(RUN / name, run / name)
    model = build_model(make_variant("tiny", 0.5, 4), num_classes=10)
    torch.save({"state_dict": model.state_dict()}, root / "tiny.pt")
    return {"RUN": run, "CKPT": root / "tiny.pt"}


CASES = [(cmd, p, shape) for (cmd, p), (kind, _) in PATHS.items() for shape in SHAPES[kind]]


@pytest.mark.parametrize(("command", "param", "shape"), CASES)
def test_bad_path(command: str, param: str, shape: str, fixtures: dict[str, Path], tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    bad = make_bad(shape, tmp_path)
    args = [
        str(bad) if a == "X" else str(fixtures[a]) if a in fixtures else a
        for a in PATHS[command, param][1]
    ]
    before = listing(tmp_path)
    result = runner.invoke(app, args)
    assert_one_error_line(result, bad.name if shape != "under_file" else "a_file")
    assert listing(tmp_path) == before


def test_check_update_refused_write_keeps_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check --update` where the OS refuses the write (a read-only baseline): one line, the old
    file intact, no temporary file left (as root, a read-only mode does not stop a write, so the
    refusal is made by os.replace)."""
    from tlbench.study.check import new_baseline

    path = tmp_path / "b.json"
    new_baseline(path, [dict(model="tiny", positions=[0.5], tokens=[4])])
    old = path.read_bytes()

    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    assert_one_error_line(
        runner.invoke(app, ["check", "--baseline", str(path), "--update"]),
        str(path),
        "Permission denied",
    )
    assert path.read_bytes() == old and listing(tmp_path) == {"b.json"}


# ---- 8. the smaller ones ------------------------------------------------------------------------


def test_empty_class_folder_among_full_ones_is_named(tmp_path: Path) -> None:
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) empty of 3 are empty"):
        check_spec(f"folder:{tmp_path}")
    (tmp_path / "empty" / "notes.txt").write_text("not an image\n")  # listed, but no image: at load
    from tlbench.data.sources import load_splits

    with pytest.raises(DataError, match=r"class folder\(s\) empty hold no image files"):
        load_splits(f"folder:{tmp_path}", img_size=8)


def test_truncated_last_line_is_one_warning_line(fixtures: dict[str, Path], tmp_path: Path) -> None:
    """A warning of tlbench's own prints as `warning: ...`, not a file and line of its source."""
    run = tmp_path / "run"
    shutil.copytree(fixtures["RUN"], run)
    with open(run / "rows.jsonl", "a") as f:
        f.write('{"model": "vit_cpu6", "vari')
    result = runner.invoke(app, ["recommend", str(run), "--max-gflops", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "truncated" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), result.output
    assert "UserWarning" not in result.output and ".py:" not in result.output


# ---- 9. run ids, and --set on --resume ------------------------------------------------------------


def test_new_dir_is_unique_under_concurrency(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tlbench.files import new_dir

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: new_dir(tmp_path, "20260101-000000-cpu"), range(16)))
    names = sorted(p.name for p in made)
    assert (
        len(set(names)) == 16
        and "20260101-000000-cpu" in names
        and "20260101-000000-cpu-16" in names
    )


@pytest.mark.slow  # three compute-only sweeps with their figures: ~10 s
def test_two_sweeps_in_one_second_get_two_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same second (the clock frozen), one --out: two runs, the second named -2, and a --set
    equal to the run's own value is no change on --resume."""
    import tlbench.study.sweep
    from tlbench.config import load_sweep
    from tlbench.study.sweep import run_sweep

    smoke = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.toml"
    monkeypatch.setattr(tlbench.study.sweep, "run_id", lambda config: "20260101-000000-cpu")
    cfg = load_sweep(
        smoke, ["quality.enabled=false", "speed.enabled=false", "grid.positions=[0.5]"]
    )
    first, second = run_sweep(cfg, tmp_path).run_dir, run_sweep(cfg, tmp_path).run_dir
    assert (first.name, second.name) == ("20260101-000000-cpu", "20260101-000000-cpu-2")
    args = ["sweep", "--resume", str(second), "--set", f"quality.steps={cfg.quality.steps}"]
    assert runner.invoke(app, args).exit_code == 0
    refused = runner.invoke(app, ["sweep", "--resume", str(second), "--set", "quality.steps=5"])
    assert_one_error_line(refused, "quality.steps: 4 -> 5")
