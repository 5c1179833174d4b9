"""Every write of a run goes through here: parents created, whole files atomic, appends synced.

One place owns the file-system rules so that no writer can forget one (the 60-second partial
checkpoint once crashed because it wrote into a `checkpoints/` folder nobody had created yet):
- `write_text`, `save_torch`: temp file in the same folder + rename, so a reader never sees half a
  file and a kill never leaves one;
- `append_text`: one write + flush + fsync, so a kill cuts at most the last line;
- `RunLock`: one process per run directory (a second `--resume` of the same run refuses);
  `lock_holder` asks, without taking it, who holds it (`tlbench status`);
- `inside`: names from config files that become paths must stay under their root;
- `new_dir`: a run directory no other process has (two sweeps started in the same second);
- `read_text`, `read_json`: a file a user points at (sweep file, manifest, baseline) is read here.
Every OSError (and a file that is not UTF-8 text or not JSON) becomes a one-line ConfigError
naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tlbench.errors import ConfigError, TLBenchError


@contextlib.contextmanager
def _os_errors(what: str, path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise ConfigError(f"cannot {what} {path}: {e.strerror or e}{_HINTS.get(e.errno or 0, '')}") from None


_HINTS = {  # what to do, by errno
    errno.EACCES: " (check its folder's permissions, or give another path)",
    errno.EPERM: " (check its folder's permissions, or give another path)",
    errno.EROFS: " (a read-only file system: give another path)",
    errno.ENOTDIR: " (a file is in the way of a folder: give another path)",
    errno.EEXIST: " (a file is in the way of a folder: give another path)",
    errno.ENOSPC: " (the disk is full: free space, or give another path)",
}


def make_dir(path: str | Path) -> Path:
    """Create `path` and its parents (a file in the way, or no permission: ConfigError)."""
    path = Path(path)
    with _os_errors("create the directory", path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    make_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share
    with _os_errors("write", path):
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_with(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write `path` atomically through `write(tmp)` (a figure's savefig, a DataFrame's to_csv):
    a refused folder or file is one ConfigError line, and no half-written file is left. `write`
    must name the format itself (the temporary file's suffix is .tmp)."""
    _atomic(Path(path), write)
    return Path(path)


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of `path`; a missing, unreadable or non-UTF-8 file is one ConfigError line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; give a file")
    with _os_errors("read", path):
        data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                          f"save the {what} as UTF-8") from None  # fmt: skip


def read_json(path: str | Path, what: str = "file", error: type[TLBenchError] = ConfigError) -> Any:
    """The JSON document in `path`; anything that is not is one `error` line naming file:line (a
    results file that is damaged: ResultsError)."""
    import json

    try:
        text = read_text(path, what)
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: corrupt {what}, not valid JSON ({e.msg})") from None
    except ConfigError as e:
        raise error(str(e)) from None


def new_dir(parent: str | Path, name: str) -> Path:
    """parent/name, created now and by this process alone: when another process made it first
    (two sweeps started in the same second), parent/name-2, name-3, ... (mkdir is atomic)."""
    parent = make_dir(parent)
    for n in range(1, 10_000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        with _os_errors("create the directory", path):
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    raise ConfigError(f"cannot find a free run directory name {name}-N under {parent}")


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` atomically (temp file + rename), creating its folder."""
    _atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_torch(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically, creating its folder (checkpoints)."""
    import torch

    _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def append_text(path: str | Path, text: str) -> None:
    """Append `text` in one write, then flush and fsync: a kill cuts at most the last line."""
    path = Path(path)
    make_dir(path.parent)
    with _os_errors("append to", path), open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def check_path(path: str | Path, what: str) -> None:
    """Refuse now, before any work, a path that no file or folder can have: one under a file
    (`--out results.csv/run`). The CLI asks it of every path a command takes."""
    path = Path(path)
    for parent in path.parents:  # the nearest one that exists must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{what} {path}: {parent} is a file, not a folder; give a path under a folder")
            return


def inside(root: str | Path, *parts: str) -> Path:
    """root/parts..., refused with ConfigError unless it stays under root (no '..', no absolute)."""
    root = Path(root)
    path = root.joinpath(*parts)
    base = os.path.abspath(root)
    if os.path.commonpath([base, os.path.abspath(path)]) != base:
        raise ConfigError(f"{'/'.join(parts)!r} would write outside {root}")
    return path


class RunLock:
    """An exclusive lock on a run directory for the lifetime of one sweep process.

    flock on `<run>/.lock`: released by the kernel when the process dies however it dies, so a
    killed run never leaves a stale lock behind. A second process refuses in one line.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._file: Any = None

    def __enter__(self) -> RunLock:
        make_dir(self.path.parent)
        with _os_errors("lock", self.path):
            f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        try:
            import fcntl
        except ImportError:  # pragma: no cover (Windows): no lock, as before
            self._file = f
            return self
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ConfigError(
                f"{self.path.parent} is in use by {holder}; wait for it to finish (or stop it)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"tlbench pid {os.getpid()}")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None


def lock_holder(run_dir: str | Path) -> str | None:
    """Who holds the run's lock now ('tlbench pid N'), or None: a shared, non-blocking flock
    on `.lock` that is released at once (it never blocks or disturbs a running sweep)."""
    path = Path(run_dir) / ".lock"  # RunLock's file
    if not path.is_file():
        return None
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows): no locks to ask
        return None
    try:
        with open(path, encoding="utf-8") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return f.read().strip() or "another process"
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except OSError:
        return None
    return None
