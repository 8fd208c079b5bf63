"""Several `nas search` processes on one study (SQLite, journal file, PostgreSQL) stop together at the budget."""

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from effnas.nas.search.budget import counted_trials
from effnas.results.storage import open_storage

pytestmark = pytest.mark.slow  # each test runs two whole searches side by side

BUDGET = 4
SPACE = {"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}
TINY = ["--data", "synthetic:240x16", "--epochs", "1", "--batch-size", "32",
        "--controller", "random", "--workers", "1", "--threads", "1", "--quiet"]  # 2 trials in flight each


def run_two_searches(tmp_path: Path, storage: str) -> None:
    """Start two `nas search` processes at once on ``storage``; both must finish cleanly."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-m", "effnas.nas", "search", *TINY, "--space", str(space), "--budget",
                          str(BUDGET), "--storage", storage, "--out", str(tmp_path / f"run{index}")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for index in range(2)]
    for process in processes:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output


def check_shared_study(storage: str, out_dirs: list[Path]) -> None:
    study = optuna.load_study(study_name="effnas", storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    assert counted_trials(study) == BUDGET  # exactly the budget, although two processes shared it
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # Both processes took part, and each trial names the process that ran it.
    workers = {t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(workers) == 2
    # The processes share --seed but not the seed stream: no architecture is trained twice. A repeated proposal
    # is recorded as a reuse of the trial that trained it, and costs no training.
    trained = [t for t in trials if "reuse_of" not in t.user_attrs]
    keys = [json.dumps(t.user_attrs["spec"], sort_keys=True) for t in trained]
    assert len(set(keys)) == len(keys) == BUDGET
    for copy in (t for t in trials if "reuse_of" in t.user_attrs):
        assert copy.user_attrs["spec"] == study.trials[copy.user_attrs["reuse_of"]].user_attrs["spec"]
        assert copy.duration.total_seconds() < 60
    # No junk: every trial either trained a candidate or reused one; none failed for want of a place.
    assert not [t for t in trials if t.state == TrialState.FAIL], [t.user_attrs for t in trials]
    # One reference, and every reward scored against it.
    reference = study.user_attrs["reference"]
    for trial in trained:
        expected = (trial.user_attrs["accuracy"] * (trial.user_attrs["step_time_ms"] / reference["step_time_ms"]) ** -0.07
                    * (trial.user_attrs["params"] / reference["params"]) ** -0.05)
        assert trial.user_attrs["reward"] == pytest.approx(expected, rel=1e-9)
    # The process that finished last wrote the study's best.
    bests = [json.loads((out / "best.json").read_text())["metrics"]["reward"] for out in out_dirs]
    assert max(bests) == max(t.user_attrs["reward"] for t in trained)


def test_two_processes_share_a_journal_study(tmp_path):
    storage = f"journal:{tmp_path / 'shared.log'}"  # Optuna's journal file, for a shared file system
    run_two_searches(tmp_path, storage)
    check_shared_study(storage, [tmp_path / "run0", tmp_path / "run1"])


def test_two_processes_of_one_command_on_one_out_explore_different_candidates(tmp_path):
    """The same command twice on one run directory: each process proposes from its own seed stream (recorded in the
    study), so the budget is spent on different architectures rather than on reuses of the other's."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    command = [sys.executable, "-m", "effnas.nas", "search", *TINY, "--space", str(space), "--budget", "12",
               "--out", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                 for _ in range(2)]
    for process in processes:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output
    study = optuna.load_study(study_name="effnas", storage=open_storage(f"sqlite:///{tmp_path / 'run' / 'study.db'}"))
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if "reuse_of" not in t.user_attrs]
    keys = [json.dumps(t.user_attrs["spec"], sort_keys=True) for t in trained]
    assert counted_trials(study) == 12 and len(set(keys)) == len(keys) == 12
    assert sum("reuse_of" in t.user_attrs for t in trials) <= 2  # one shared stream: 6 to 8 reuses
    streams = study.user_attrs["seed_streams"]
    assert [s["index"] for s in streams] == [0, 1] and len({s["seed"] for s in streams}) == 2
    assert {s["worker"] for s in streams} == {t.user_attrs["worker"] for t in trained}


def test_processes_creating_one_sqlite_study_together_all_succeed(tmp_path):
    """Searches started at once on a new database race to create its tables; none may fail for it."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code = ("import sys, optuna; from effnas.results.storage import open_storage; "
            "optuna.create_study(study_name='effnas', storage=open_storage(sys.argv[1]), load_if_exists=True)")
    processes = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, errors
    assert len(optuna.get_all_study_summaries(open_storage(url))) == 1


# ---------------------------------------------------------------- a real PostgreSQL server
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server (Debian's package) on a free localhost port; skipped if unavailable."""
    pytest.importorskip("psycopg", reason="PostgreSQL test needs psycopg 3 (pip install 'psycopg[binary]')")
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the postgres system user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="effnas-pg-"))
    if prefix:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=60)

    init = run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "effnas", "--no-sync")
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    if start.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {(start.stderr or start.stdout).strip()[-300:]}")
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="effnas", dbname="postgres",
                             autocommit=True) as connection:
            connection.execute("CREATE DATABASE effnas")
        yield f"postgresql://effnas@127.0.0.1:{port}/effnas"  # the documented form: psycopg 3, the extra's driver
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_processes_share_a_postgresql_study(tmp_path, postgres_url):
    run_two_searches(tmp_path, postgres_url)
    check_shared_study(postgres_url, [tmp_path / "run0", tmp_path / "run1"])


def test_another_programs_postgresql_database_is_refused_before_optuna_adds_a_table(postgres_url):
    import psycopg

    from effnas.results.storage import StorageError

    url = postgres_url.rsplit("/", 1)[0] + "/shop"
    params = make_url_params(postgres_url)
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as connection:
        connection.execute("CREATE DATABASE shop")
    with psycopg.connect(**params, dbname="shop", autocommit=True) as connection:
        connection.execute("CREATE TABLE customers (name TEXT)")
    with pytest.raises(StorageError, match="holds a table 'customers' that Optuna does not make"):
        open_storage(url)
    with psycopg.connect(**params, dbname="shop") as connection:
        tables = {row[0] for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"customers"}


def make_url_params(url: str) -> dict:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return {"host": parsed.host, "port": parsed.port, "user": parsed.username}
