"""A one-node SLURM cluster with accounting on this machine, for tests and for trying the cluster
path: munge, MariaDB, slurmdbd, slurmctld and slurmd, all started by this script as root, with
every config file, socket, database, spool and log under one folder and on free ports of their
own. It never touches a cluster already here: it writes nothing under /etc, uses its own munge
socket and key, and refuses to start while any slurmctld, slurmd or slurmdbd runs. It stops
exactly the processes it started (by pid).

    sudo python scripts/local_slurm.py start [--dir DIR]   # prints `export SLURM_CONF=...`
    sudo python scripts/local_slurm.py stop  [--dir DIR]

From Python (the tests' fixture): `with LocalSlurm.started(folder) as cluster: cluster.env`.
Missing packages (Debian: slurm-wlm, slurmdbd, munge, mariadb-server) are installed with apt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
SLURM_DAEMONS = ("slurmctld", "slurmd", "slurmdbd")
CLUSTER, NODE, PARTITION, ACCOUNT = "tlbench", "tlbench-node", "debug", "tlbench"
STATE = "cluster.json"  # the started pids and the environment, for `stop` and other shells


class CannotStart(RuntimeError):
    """The cluster cannot start here (not root, no apt, a cluster already running): the reason."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running_daemons() -> list[str]:
    """'name pid' of every SLURM daemon running on this machine, whoever started it."""
    out = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            name = comm.read_text().strip()
            if name in SLURM_DAEMONS and _alive(int(comm.parent.name)):  # a zombie runs nothing
                out.append(f"{name} {comm.parent.name}")
    return sorted(out)


def install() -> None:
    """apt-get install what is missing; refuse (CannotStart) where that cannot be done."""
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise CannotStart(
            f"SLURM is not installed and this is not root on Debian/Ubuntu: apt-get install {' '.join(PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise CannotStart(f"{' '.join(cmd)} failed: {tail[0] if tail else done.returncode}")


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class LocalSlurm:
    """The cluster under `root`: `env` is what a client (sbatch, sacct, tlbench) needs."""

    root: Path
    pids: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    @contextlib.contextmanager
    def started(cls, root: Path, timeout_s: float = 120.0) -> Iterator[LocalSlurm]:
        cluster = cls(Path(root).resolve())
        try:
            cluster.start(timeout_s)
            yield cluster
        finally:
            cluster.stop()

    # ---------------------------------------------------------------- start
    def start(self, timeout_s: float = 120.0) -> None:
        """Install what is missing, write the config, start the five daemons, and return once the
        node is idle and sacct answers. On any failure, stops what it started and raises."""
        if not sys.platform.startswith("linux") or os.geteuid() != 0:
            raise CannotStart("a local SLURM needs root on Linux (slurmd runs jobs as any user)")
        if running := running_daemons():
            raise CannotStart(
                f"a SLURM cluster already runs here ({', '.join(running)}); not touching it"
            )
        install()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged refuses a socket folder others may write
        for sub in ("state", "spool", "mysql", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        ports = {k: _free_port() for k in ("ctld", "slurmd", "dbd", "mysql")}
        try:
            self._munge()
            self._mariadb(ports["mysql"])
            self._write_config(ports)
            self.env = {"SLURM_CONF": str(self.root / "slurm.conf")}
            self._spawn("slurmdbd", [_sbin("slurmdbd"), "-D"])
            self._wait(
                lambda: self._ok(["sacctmgr", "-n", "list", "cluster"]),
                "slurmdbd answering",
                timeout_s,
            )
            self._ok(["sacctmgr", "-i", "add", "cluster", CLUSTER])
            self._ok(
                [
                    "sacctmgr",
                    "-i",
                    "add",
                    "account",
                    ACCOUNT,
                    "Description=tlbench",
                    "Organization=tlbench",
                ]
            )
            self._ok(
                [
                    "sacctmgr",
                    "-i",
                    "add",
                    "user",
                    "root",
                    f"Account={ACCOUNT}",
                    f"DefaultAccount={ACCOUNT}",
                ]
            )
            self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-i"])
            self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", NODE])
            self._wait(self._idle, "the node idle", timeout_s)
            self._wait(lambda: self._ok(["sacct", "-n", "-X", "-a"]), "sacct answering", timeout_s)
        except BaseException:
            self.stop()
            raise
        self._save()

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.root / "log" / f"{name}.out").open("ab")
        proc = subprocess.Popen(cmd, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.pids[name] = proc.pid
        self._save()
        time.sleep(0.5)
        if proc.poll() is not None:
            raise CannotStart(f"{name} exited at once ({proc.returncode}); see {self.root / 'log'}")

    def _munge(self) -> None:
        key = self.root / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = self.root / "munge.socket"
        self._spawn("munged", [_sbin("munged"), "-F", "--force", f"--key-file={key}", f"--socket={sock}",
                               f"--pid-file={self.root / 'munged.pid'}", f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={self.root / 'munge.seed'}"])  # fmt: skip
        self._wait(sock.exists, "munged's socket", 30)

    def _mariadb(self, port: int) -> None:
        data = self.root / "mysql"
        if not (data / "mysql").is_dir():
            install_db = (
                shutil.which("mariadb-install-db")
                or shutil.which("mysql_install_db")
                or "mariadb-install-db"
            )
            done = subprocess.run([install_db, "--no-defaults", f"--datadir={data}", "--user=root",
                                   "--auth-root-authentication-method=normal", "--skip-test-db"],
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode:
                raise CannotStart(f"mariadb-install-db failed: {done.stderr.strip()[-300:]}")
        self._spawn("mariadbd", [_sbin("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=root",
                                 f"--socket={self.root / 'mysql.sock'}", f"--port={port}", "--bind-address=127.0.0.1",
                                 f"--pid-file={self.root / 'mariadbd.pid'}", "--skip-name-resolve",
                                 f"--log-error={self.root / 'log' / 'mariadbd.log'}", "--innodb-buffer-pool-size=32M"])  # fmt: skip
        client = shutil.which("mariadb") or "mysql"
        sql = ("CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1'; "
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")  # fmt: skip
        self._wait(lambda: self._ok([client, "--no-defaults", f"--socket={self.root / 'mysql.sock'}", "-uroot", "-e", sql]),
                   "MariaDB", 60)  # fmt: skip

    def _write_config(self, ports: dict[str, int]) -> None:
        r, host = self.root, socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        auth = f"socket={r / 'munge.socket'},cred_expire=10"  # cred_expire: a requeued job waits this long
        (r / "plugstack.conf").write_text("")  # not /etc/slurm/plugstack.conf
        conf = f"""# written by scripts/local_slurm.py; every path under {r}
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports["ctld"]}
SlurmdPort={ports["slurmd"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo={auth}
CredType=cred/munge
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "log" / "slurmctld.log"}
SlurmdLogFile={r / "log" / "slurmd.log"}
PlugStackConfig={r / "plugstack.conf"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={ports["dbd"]}
AccountingStoragePass={r / "munge.socket"}
AccountingStorageEnforce=associations
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        (r / "slurm.conf").write_text(conf)
        dbd = r / "slurmdbd.conf"
        dbd.write_text(f"""AuthType=auth/munge
AuthInfo={auth}
DbdHost=localhost
DbdPort={ports["dbd"]}
SlurmUser=root
PidFile={r / "slurmdbd.pid"}
LogFile={r / "log" / "slurmdbd.log"}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports["mysql"]}
StorageUser=slurm
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)  # slurmdbd refuses a config others can read

    def _ok(self, cmd: list[str]) -> bool:
        done = subprocess.run(
            cmd, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60
        )
        return done.returncode == 0

    def _idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def _wait(self, ready: object, what: str, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if ready():  # type: ignore[operator]
                return
            for name, pid in self.pids.items():
                if not _alive(pid):
                    raise CannotStart(
                        f"{name} died while waiting for {what}; see {self.root / 'log'}"
                    )
            time.sleep(0.5)
        raise CannotStart(
            f"timed out after {timeout_s:.0f} s waiting for {what}; see {self.root / 'log'}"
        )

    # ---------------------------------------------------------------- stop
    def stop(self) -> None:
        """SIGTERM each daemon this object started, newest first, then SIGKILL what is left."""
        for name in reversed(list(self.pids)):
            pid = self.pids[name]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.time() + 15
            while _alive(pid) and time.time() < deadline:
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pids.clear()
        with contextlib.suppress(OSError):
            (self.root / STATE).unlink()

    def _save(self) -> None:
        (self.root / STATE).write_text(json.dumps({"pids": self.pids, "env": self.env}) + "\n")

    @classmethod
    def load(cls, root: Path) -> LocalSlurm:
        doc = json.loads((Path(root) / STATE).read_text())
        return cls(Path(root).resolve(), dict(doc["pids"]), dict(doc["env"]))


def _alive(pid: int) -> bool:
    """Running and not a zombie (a daemon we started but did not reap yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "tlbench-slurm",
                        help="where config, state and logs go (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    if args.action == "stop":
        if not (root / STATE).exists():
            print(f"error: no cluster started under {root}", file=sys.stderr)
            return 2
        LocalSlurm.load(root).stop()
        print(f"stopped the cluster under {root}")
        return 0
    cluster = LocalSlurm(root)
    try:
        cluster.start()
    except CannotStart as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"a one-node SLURM runs under {root} (partition {PARTITION}, account {ACCOUNT}); in your shell:"
    )
    print(f"export SLURM_CONF={cluster.env['SLURM_CONF']}")
    print(f"stop it with: python {Path(__file__).name} stop --dir {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
