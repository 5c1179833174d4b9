"""Sweep configuration: typed records with commented defaults, loaded strictly from TOML.

The defaults ARE the built-in study (`tlbench sweep` with no argument); sweeps/default.toml
spells them out. Unknown keys, wrong types and bad values raise ConfigError naming file and key.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlbench.bounds import check_fields
from tlbench.errors import ConfigError

# speed.dtype: float32, autocast, or "pure" (weights and input cast, no autocast); speed.compile_mode
SPEED_DTYPES = ("float32", "bfloat16", "float16", "bfloat16-pure", "float16-pure")
# torch.compile modes; reduce-overhead and max-autotune add CUDA graphs on CUDA (none on a CPU).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a sweep's name is a folder under --out

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ModelConfig:
    name: str = "vit_cpu6"  # alias or timm ViT name
    # Several models in one sweep (the paper's family); when given, it replaces `name` (which
    # becomes its first entry). One name here is the same sweep as `name` alone.
    names: tuple[str, ...] = ()
    img_size: int | None = None  # None: the model's own
    pretrained: bool = False  # timm weights for the backbone (TokenLearner always starts fresh)
    checkpoint: str | None = None  # a local timm checkpoint instead of the hub

    @property
    def models(self) -> tuple[str, ...]:
        """The sweep's models, in order: `names`, or `name` alone."""
        return self.names or (self.name,)


PAPER_TOKENS = (8, 16)  # the paper's S: what `tlbench flops` and make_variants count by default
ADAPT = ("scratch", "none", "distill")  # quality.adapt


@dataclass(frozen=True)
class GridConfig:
    # The paper's figure: start, 1/4, 1/2, 3/4 and the baseline. p = 1 (after the last block)
    # costs the baseline plus the module, so the CPU default leaves it out.
    positions: tuple[float, ...] | str = (0.0, 0.25, 0.5, 0.75)  # or "all": every block index
    tokens: tuple[int, ...] = (8,)
    baseline: bool = True
    version: str = "1.1"  # TokenLearner 1.1 (MLP + softmax) or 1.0 (convs + sigmoid)
    fuser: bool = False  # TokenLearner + TokenFuser in every layer from p on
    # Token reduction methods (tlbench/reducers/), each at every position x token count
    methods: tuple[str, ...] = ("tokenlearner",)
    # Method parameters, one table per method: [grid.options.tome_r] r = [13, 8] gives every
    # position at r = 13 and at r = 8. A method's own defaults fill what is absent (tome_r: r = 13).
    options: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ComputeConfig:
    enabled: bool = True


@dataclass(frozen=True)
class SpeedConfig:
    """The speed stage's knobs, the one place their defaults live: sweeps, `tlbench bench` and
    measure.throughput.time_interleaved all take this record whole."""

    enabled: bool = True
    device: str = "auto"  # cuda if present, else cpu
    batch_size: int | str = "auto"  # 'auto': largest that fits on CUDA; 8 on CPU
    # float32; bfloat16 / float16: autocast (fp32 weights); bfloat16-pure / float16-pure: the
    # weights and the input cast (no autocast), as timm's benchmark --precision bfloat16
    dtype: str = "float32"
    compile: bool = False  # torch.compile every model (inductor), baseline and variants alike
    compile_mode: str = "default"  # or reduce-overhead, max-autotune, max-autotune-no-cudagraphs
    cuda_graphs: bool = False  # CUDA only: capture each forward once, time replays (a CPU: off)
    channels_last: bool = False  # NHWC input and patch convolution (timm's --channels-last)
    # The device's matmul peak and bandwidth (once), each variant's bytes moved and a profiled
    # pass: rows efficiency, mfu, arith_intensity, time_share_* ... and figures/roofline
    roofline: bool = True
    rounds: int | None = None  # None: adaptive, until every speedup interval is tight or time is up
    time_cap_s: float | None = 10.0  # adaptive rounds stop after this much timing (None: the device's, 60 s)
    warmup: int | None = None  # passes per model before timing (None: the device's schedule)
    iters: int | None = None  # forward passes per model per round (None: the device's schedule)
    threads: int | None = None  # CPU threads (None: every core this process may use)
    tf32: bool = False  # TF32 matmuls on CUDA (torch's default is off; timm's benchmark turns it on)
    target_ci: float = 0.05  # adaptive rounds stop when every speedup's 95% half-width is below this
    max_rounds: int | None = None  # adaptive rounds at most (None: the device's schedule)


@dataclass(frozen=True)
class QualityConfig:
    """The quality stage's knobs, the one place their defaults live: sweeps, `tlbench probe` and
    tlbench.quality.probe all take this record whole."""

    enabled: bool = True
    train_data: str = "mnist"  # pre-training set: built-in, folder:PATH, or cifar10:ROOT ...
    probe_data: tuple[str, ...] = ("digits", "mnist")  # transfer probe + in-domain held-out probe
    steps: int = 400  # x 128 images: the built-in study in ~4 min on 2 cores (results/README.md)
    batch_size: int = 128
    lr: float = 3e-3
    shots: tuple[int, ...] = (1, 5, 10, 25)  # big_vision's
    seeds: int = 3
    l2_reg: float | str = 1024.0  # 2**10, big_vision's; "cv": picked on each support set
    device: str = "auto"
    budget_s: float | None = 900.0  # skip a variant whose estimated cost is above this
    workers: int | str = "auto"  # parallel training processes on a CPU; auto: cores // threads
    # CPU threads per training process. Fixed, not "all cores": the thread count changes float
    # rounding, so a study trained with 1 thread per process gives the same numbers on any machine
    # (and on CUDA it does not matter). None: the cores split between the workers.
    threads: int | None = 1
    init_reference: bool = False  # also probe the features before training (a pass per variant)
    save_every_s: float = 60.0  # partial training checkpoint interval (0: every step)
    # How a reducer meets the model: "scratch" trains every variant with labels; "none" trains
    # (or, with model.pretrained and steps = 0, loads) the baseline only, inserts each reducer
    # into it and probes at once: the off-the-shelf question; "distill" does the same, then
    # retrofits each variant without labels: the reducer and the blocks from k on learn to match
    # the baseline's pre-logits and logits for distill_steps steps (the blocks before k frozen).
    adapt: str = "scratch"
    distill_steps: int = 100
    # adapt = none: also each reducer's teacher_agreement and teacher_cosine against the unreduced
    # model on train_data's held-out split (distill always measures them). Nearly free when that
    # split is a probe set too: the probe's features are reused and the teacher runs once a process.
    agreement: bool = False


EXECUTORS = ("inline", "local", "slurm", "debug")  # executor.kind


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the units run (tlbench/executors.py). It does not change what is measured, so a
    --resume may change it (config_diff leaves it out)."""

    # inline: this process, as always; local: submitit jobs on this machine, `workers` at a time;
    # slurm: one SLURM job per unit (speed: one per model), as job arrays; debug: submitit in-process
    kind: str = "inline"
    workers: int = 2  # local: jobs at once (submitit's LocalExecutor starts every job it is given)
    partition: str | None = None  # slurm: --partition (None: the cluster's default)
    account: str | None = None  # slurm: --account
    gpus_per_node: int = 1  # slurm: GPUs per job: one unit per GPU
    cpus_per_task: int | None = None  # slurm: --cpus-per-task (None: the cluster's default)
    timeout_min: int = 60  # local, slurm: time limit per job; a training unit past it requeues and resumes
    exclusive: bool = True  # slurm: speed jobs get whole nodes (a shared timing means nothing)
    max_requeues: int = 3  # slurm: how often a preempted or timed-out unit comes back
    setup: tuple[str, ...] = ()  # slurm: shell lines run before the job (module load, conda activate)


@dataclass(frozen=True)
class SweepConfig:
    name: str = "default"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


R = typing.TypeVar("R")


def with_knobs(record: R, what: str, **knobs: Any) -> R:
    """`record` with some fields replaced (a notebook's keywords over a whole settings record);
    an unknown name is one ConfigError listing the known ones."""
    try:
        return dataclasses.replace(record, **knobs)
    except TypeError:
        known = ", ".join(f.name for f in dataclasses.fields(record))
        raise ConfigError(f"unknown {what} setting in {sorted(knobs)}; known: {known}") from None


def load_sweep(path: str | Path | None = None, overrides: list[str] | None = None,
               base: SweepConfig | None = None) -> SweepConfig:  # fmt: skip
    """A sweep file (or `base`, or the built-in default, when None) with `key=value` overrides
    applied (`base`: a run's own config, which `--resume RUN --set ...` overrides)."""
    from tlbench.files import read_text

    where = str(path) if path else "built-in default" if base is None else "the run's config"
    data: dict[str, Any] = json.loads(json.dumps(to_dict(base))) if base is not None else {}
    if path is not None:
        path = Path(path)
        if not path.is_file() and not path.is_dir():
            raise ConfigError(f"sweep file not found: {path}")
        try:
            data = tomllib.loads(read_text(path, "sweep file"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        _set(data, key.strip(), _parse_value(raw.strip()))
    return from_dict(data, where)


def from_dict(data: dict[str, Any], where: str = "config") -> SweepConfig:
    return _build(SweepConfig, data, where, "")


def quality_config(where: str, **values: Any) -> QualityConfig:
    """A QualityConfig checked as a sweep's [quality] table is (`tlbench probe` builds its own)."""
    return _build(QualityConfig, {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
                  where, "quality.")  # fmt: skip


def to_dict(config: SweepConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_diff(old: SweepConfig, new: SweepConfig) -> list[str]:
    """'section.key: old -> new' for every key that differs (what a --resume would change)."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    a, b = flat(to_dict(old)), flat(to_dict(new))
    a, b = ({k: v for k, v in d.items() if not k.startswith("executor.")} for d in (a, b))
    keys = [*a, *(k for k in b if k not in a)]  # grid.options tables may exist on one side only
    return [f"{k}: {_show(a.get(k))} -> {_show(b.get(k))}" for k in keys if a.get(k) != b.get(k)]


def with_executor(config: SweepConfig, kind: str) -> SweepConfig:
    """The config with executor.kind = kind (the --executor flag), validated like the file key."""
    data = json.loads(json.dumps(to_dict(config)))  # tuples -> lists, as in a manifest
    data["executor"]["kind"] = kind
    return from_dict(data, "--executor")


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def _parse_value(raw: str) -> Any:
    """An override value is a TOML value; anything TOML cannot read is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[last] = value


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'} must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        hint, key = hints[name], prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, where, key + ".")
        elif typing.get_origin(hint) is dict:
            kwargs[name] = _option_tables(value, where, key)
        else:
            kwargs[name] = _coerce(value, hint, where, key)
    config = cls(**kwargs)
    check_fields(config, where, prefix)  # numbers in range, no empty strings or lists (tlbench.bounds)
    if isinstance(config, ModelConfig) and config.names:  # name := names[0]; one name is `name`
        config = dataclasses.replace(config, name=config.names[0],
                                     names=config.names if len(config.names) > 1 else ())  # fmt: skip
    _validate(config, where, prefix)
    return config


def _option_tables(value: Any, where: str, key: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """{method: {name: int or list of ints}} -> {method: {name: tuple of ints}}."""
    if not isinstance(value, dict) or not all(isinstance(t, dict) for t in value.values()):
        raise ConfigError(f"{where}: {key} must hold one table per method, e.g. [{key}.tome_r]")
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for method, table in value.items():
        out[method] = {}
        for name, values in table.items():
            values = [values] if _is(values, int) else values
            if not isinstance(values, (list, tuple)) or not values or not all(_is(v, int) for v in values):
                raise ConfigError(f"{where}: {key}.{method}.{name} must be an integer or a list of integers, got {values!r}")
            out[method][name] = tuple(values)
    return out


def _coerce(value: Any, hint: Any, where: str, key: str) -> Any:
    """Check `value` against a field's type; lists become tuples."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for opt in options:
        if opt is type(None) and value is None:
            return None
        origin = typing.get_origin(opt)
        if origin is tuple and isinstance(value, list):
            item = typing.get_args(opt)[0]
            if all(_is(v, item) for v in value):
                return tuple(float(v) if item is float else v for v in value)
        elif origin is None and opt is not type(None) and _is(value, opt):
            return float(value) if opt is float else value
    names = " or ".join(_type_name(o) for o in options)
    raise ConfigError(f"{where}: {key} must be {names}, got {value!r}")


def _is(value: Any, typ: type) -> bool:
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _type_name(t: Any) -> str:
    if t is type(None):
        return "absent"
    if typing.get_origin(t) is tuple:
        return f"a list of {typing.get_args(t)[0].__name__}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(t, str(t))


def _validate(config: Any, where: str, prefix: str) -> None:
    """Value checks that types alone cannot express."""
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{where}: {prefix}{key} {why}")

    if isinstance(config, SweepConfig) and not NAME.fullmatch(config.name):
        raise bad("name", f"must be letters, digits, '.', '_' or '-' (it names a folder), got {config.name!r}")
    if isinstance(config, ModelConfig) and config.names:
        if len(set(config.names)) < len(config.names):
            raise bad("names", f"names a model twice: {list(config.names)}")
        if config.checkpoint is not None:
            raise bad("checkpoint", "is one model's weights: give it with model.name, not model.names")
    if isinstance(config, GridConfig):
        if isinstance(config.positions, str) and config.positions != "all":
            raise bad("positions", f"must be a list of numbers or 'all', got {config.positions!r}")
        if config.version not in ("1.1", "1.0"):
            raise bad("version", f"must be '1.1' or '1.0', got {config.version!r}")


        from tlbench.reducers import (
            REDUCERS,  # the registry imports torch: only when a grid is read
        )

        unknown = [m for m in config.methods if m not in REDUCERS]
        if not config.methods or unknown or len(set(config.methods)) < len(config.methods):
            raise bad("methods", f"must name distinct methods of {', '.join(sorted(REDUCERS))}; "
                      f"got {list(config.methods)}")  # fmt: skip
        for method, table in config.options.items():
            if method not in REDUCERS:
                raise bad("options", f"names an unknown method {method!r}; known: {', '.join(sorted(REDUCERS))}")
            declared = getattr(REDUCERS[method], "options", {})
            for name in table:
                if name not in declared:
                    takes = ", ".join(sorted(declared)) or "none"
                    raise bad(f"options.{method}.{name}", f"is not a parameter of {method} (it takes {takes})")
    if isinstance(config, SpeedConfig):
        if isinstance(config.batch_size, str) and config.batch_size != "auto":
            raise bad("batch_size", f"must be a positive integer or 'auto', got {config.batch_size!r}")
        if isinstance(config.batch_size, int) and config.batch_size < 1:
            raise bad("batch_size", "must be positive")

        if config.dtype not in SPEED_DTYPES:
            raise bad("dtype", f"must be one of {', '.join(SPEED_DTYPES)}, got {config.dtype!r}")
        if config.compile_mode not in COMPILE_MODES:
            raise bad("compile_mode", f"must be one of {', '.join(COMPILE_MODES)}, got {config.compile_mode!r}")
    if isinstance(config, QualityConfig):
        # (numbers: their ranges are in tlbench.bounds.SWEEP, checked for every field by _build)
        if isinstance(config.workers, str) and config.workers != "auto":
            raise bad("workers", f"must be a positive integer or 'auto', got {config.workers!r}")
        if isinstance(config.l2_reg, str) and config.l2_reg != "cv":
            raise bad("l2_reg", f"must be a positive number or 'cv', got {config.l2_reg!r}")
        if config.adapt not in ADAPT:
            raise bad("adapt", f"must be one of {', '.join(ADAPT)}, got {config.adapt!r}")
    if isinstance(config, ExecutorConfig):
        if config.kind not in EXECUTORS:
            raise bad("kind", f"must be one of {', '.join(EXECUTORS)}, got {config.kind!r}")
    for key in ("device",):
        dev = getattr(config, key, None)
        if dev is not None and dev not in ("auto", "cpu", "cuda") and not dev.startswith("cuda:"):
            raise bad(key, f"must be auto, cpu, cuda or cuda:N, got {dev!r}")
