"""Many machines, one study: two clones of one repository run stages/tune.py at the same time
against one Optuna study in a real PostgreSQL server on 127.0.0.1, then share their
experiments through a git remote and a DVC remote (local directories), as two machines would."""

import glob
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.projects import sh, trained_project, user_env

pytestmark = pytest.mark.e2e

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")
pytest.importorskip("psycopg", reason="the PostgreSQL driver (tune extra) is not installed")
from optuna.trial import TrialState  # noqa: E402

from pipeline.study import counts  # noqa: E402

# Debian keeps initdb and pg_ctl off PATH, under /usr/lib/postgresql/<version>/bin.
BIN = next(
    (Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]),
    Path(shutil.which("initdb") or "/nonexistent").parent,
)
if not (BIN / "initdb").is_file() or not (BIN / "pg_ctl").is_file():
    pytest.skip(
        "PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)",
        allow_module_level=True,
    )

TRIALS = 3
SPACE = {
    "fixed": {"train.epochs": 1},
    "search": {"train.lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}},
    "pruner": {"kind": "none"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server in a temporary directory, listening on 127.0.0.1 only, with an empty
    database `optuna`; its URL. Stopped and removed at the end. It refuses to run as root, so
    under root it runs as the `postgres` user that Debian's package creates."""
    base = Path(tempfile.mkdtemp(prefix="tune-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = base / "data"

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"

    run(str(BIN / "initdb"), "-D", str(data), "-U", "tune", "--auth=trust", "-E", "UTF8")
    server = f"-h 127.0.0.1 -p {port} -k {base}"  # TCP on loopback; its socket in base
    try:
        run(
            str(BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "log"),
            "-o",
            server,
            "-w",
            "start",
        )
        run(str(BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tune", "optuna")
        yield f"postgresql://tune@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*as_user, str(BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)


def clone(remote: Path, path: Path) -> Path:
    sh(remote.parent, "git", "clone", "-q", str(remote), str(path))
    sh(path, "git", "config", "user.name", "Test")
    sh(path, "git", "config", "user.email", "test@example.com")
    sh(path, "dvc", "pull", "-q")  # the committed outputs: trials rerun train and evaluate only
    return path


def experiment_names(project: Path) -> set[str]:
    return set(sh(project, "dvc", "exp", "list", "--name-only").split())


def model_md5(project: Path, experiment: str) -> str:
    sh(project, "dvc", "exp", "apply", experiment)
    sh(project, "dvc", "pull", "-q", "models/model.pt")  # from the DVC remote if not cached
    return hashlib.md5((project / "models" / "model.pt").read_bytes()).hexdigest()


def test_two_clones_run_one_postgresql_study_and_share_every_experiment(tmp_path_factory, tmp_path):
    origin = trained_project(tmp_path_factory, "origin")
    (origin / "tune.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    sh(origin, "dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote"))
    sh(origin, "git", "add", "tune.yaml", ".dvc/config")
    sh(origin, "git", "commit", "-q", "-m", "search space, DVC remote")
    remote = tmp_path / "remote.git"
    sh(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(remote))
    sh(origin, "git", "push", "-q", str(remote), "main")
    sh(origin, "dvc", "push", "-q")
    machines = [clone(remote, tmp_path / name) for name in ("machine-a", "machine-b")]

    with postgres() as url:
        command = [sys.executable, "stages/tune.py", "--trials", str(TRIALS), "--study", "shared"]
        runs = [
            subprocess.Popen(
                [*command, "--storage", url, "--seed", str(seed)],
                cwd=machine,
                env=user_env(DVC_NO_ANALYTICS="1"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seed, machine in enumerate(machines)
        ]
        outputs = [run.communicate(timeout=900) for run in runs]
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, out + err
        study = optuna.load_study(study_name="shared", storage=url)
        trials = [t for t in study.trials if counts(t)]
    # Exactly N trials together, each number once, each run by one machine only.
    assert len(trials) == TRIALS
    assert all(t.state == TrialState.COMPLETE for t in trials)
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == TRIALS
    done = re.compile(r"^trial (\d+) \(shared-\1\): accuracy", re.M)
    ran = [{int(n) for n in done.findall(out)} for out, _ in outputs]
    assert not ran[0] & ran[1] and ran[0] | ran[1] == set(numbers)
    names = {f"shared-{n}" for n in numbers}
    assert set().union(*map(experiment_names, machines)) == names

    # Each machine pushes its experiments (commits to git, outputs to the DVC remote), then
    # pulls the other's: both then hold all N, and the same model for each.
    for machine in machines:
        sh(machine, "dvc", "exp", "push", "origin")
    for machine in machines:
        sh(machine, "dvc", "exp", "pull", "origin")
        assert experiment_names(machine) == names
    # A model made on one machine reaches the other through the DVC remote, the same bytes.
    made_by = 1 if ran[1] else 0
    theirs = f"shared-{min(ran[made_by])}"
    maker, other = machines[made_by], machines[1 - made_by]
    assert model_md5(other, theirs) == model_md5(maker, theirs)
