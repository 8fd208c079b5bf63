"""Fault suite, hostile input: files the tool writes, files and numbers it reads, decoders, names, secrets.

Each case runs the real CLI (``main(argv)``, every case in one subprocess, see :func:`drive`) and ends in one line and
exit 2 (or, where the tool can go on, a skip with a warning, or a write through a symlink), without a traceback,
without replacing anything: every output path that is not a regular file is still what it was, and the study the
search cases point at keeps its bytes, its ``PRAGMA integrity_check`` and its trial count. The cases are defenses by class (see docs/faults.md):
  outputs   written through a symlink, else refused unless a regular file or a new one in a writable folder
  reads     spec and space files: regular, at most 1 MiB, JSON nesting bounded, no NaN, no YAML aliases;
            every number bounded; a network too big for the device refused by its estimate before it is built
  decoders  .npz headers, CIFAR's array reconstructor and image headers checked before anything is allocated
  numbers   NaN and infinity refused
  names     control characters refused in names, escaped in every echoed string
  secrets   no storage URL's password in any output
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sqlite3
import stat
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.cli_driver import run_commands
from tests.test_faults_inputs import TINY, assert_one_line_error

pytestmark = pytest.mark.slow  # every hostile input through the real CLI: searches, training runs and reports

SECRET = "SECRETPW"
PG_URL = f"postgresql://u:{SECRET}@127.0.0.1:1/db"
SEARCH = ["search", "--device", "cpu", "--quiet", "--budget", "1", "--epochs", "1", "--data", "synthetic:20x8"]
HUGE = {**TINY, "train_image_size": 4096, "eval_image_size": 4096, "head_channels": 8192,
        "stages": ["r100_k15_s1_e16_i8_o8192_c1"] + ["r100_k15_s1_e16_i8192_o8192_c0_se0.25"] * 3}


# ----------------------------------------------------------------------------- hostile files
def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def npz_claiming(path: Path, shape: tuple[int, ...]) -> str:
    """An .npz whose ``x.npy`` header claims ``shape`` (uint8) while holding 64 bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.uint8)) | {"shape": shape}
    member = bytearray()

    class Sink:
        def write(self, data: bytes) -> None:
            member.extend(data)

    np.lib.format.write_array_header_1_0(Sink(), header)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", bytes(member) + bytes(64))
        archive.writestr("y.npy", _npy(np.arange(20) % 2))
    return f"npz:{path}"


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_deflate_lie(path: Path) -> str:
    """A deflated .npz whose zip directory claims 4 GB for a member of a few hundred compressed bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", _npy(np.zeros((20, 8, 8), np.uint8)))
        archive.writestr("y.npy", _npy(np.arange(20) % 2))
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local and central uncompressed size
        at = data.find(signature)
        data[at + offset:at + offset + 4] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(data))
    return f"npz:{path}"


class _HugeArray:  # unpickles through the allowed reconstructor, asking it for 10^12 elements
    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (10**12,), b"b")


def cifar_huge(root: Path) -> str:
    folder = root / "cifar"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _HugeArray(), b"labels": [0]}, protocol=2))
    return f"cifar:{folder}"


def imagefolder_of_bombs(root: Path) -> str:
    for name in ("a", "b"):
        (root / "folder" / name).mkdir(parents=True)
        (root / "folder" / name / "huge.png").write_bytes(png_header(20_000, 20_000))
    return f"imagefolder:{root / 'folder'}"


def foreign_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (name TEXT, card TEXT)")
        db.execute("INSERT INTO customers VALUES ('ada', '4111')")
    db.close()


def spec_file(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f'{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]'
              for i in range(8)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the cases
# (id, class, fault, outcome, argv builder(case_dir, study_dir) -> argv, pattern or None (exit 0), check(case_dir))
Build = Callable[[Path, Path], list]
Check = Callable[[Path, subprocess.CompletedProcess], None]


def _still(path: str, test: Callable[[int], bool]) -> Check:
    def check(case: Path, result: subprocess.CompletedProcess) -> None:
        target = Path(path) if path.startswith("/") else case / path
        assert test(os.lstat(target).st_mode), f"{target} was replaced"
    return check


def _no_secret(case: Path, result: subprocess.CompletedProcess) -> None:
    assert SECRET not in result.stdout + result.stderr, "the storage password was printed"


def _no_escape(case: Path, result: subprocess.CompletedProcess) -> None:
    assert "\x1b" not in result.stdout + result.stderr, "a control character reached the terminal"


def _written_through(case: Path, result: subprocess.CompletedProcess) -> None:
    assert os.path.islink(case / "link.json") and json.loads((case / "real.json").read_text())["stages"]


def _short(case: Path, result: subprocess.CompletedProcess) -> None:
    assert len(result.stderr) < 600, len(result.stderr)


def _warned_each(case: Path, result: subprocess.CompletedProcess) -> None:
    assert result.stderr.count("huge.png") >= 2, result.stderr[-2000:]


def _db_kept(name: str) -> Check:
    def check(case: Path, result: subprocess.CompletedProcess) -> None:
        assert hashlib.sha256((case / "run" / "study.db").read_bytes()).hexdigest() == (case / "sha").read_text()
    return check


def _empty(case: Path) -> None:
    assert list(case.iterdir()) == [], sorted(p.name for p in case.iterdir())


def _no_run(case: Path) -> None:
    assert not (case / "run").exists(), "a run directory was written"


def _nothing(case: Path, result: subprocess.CompletedProcess) -> None:
    pass


def tiny(case: Path, **changes) -> str:
    return spec_file(case / "spec.json", json.dumps({**TINY, **changes}))


def space(case: Path, text: str, name: str = "space.json") -> str:
    return spec_file(case / name, text)


def _prepare_db(kind: str) -> Build:
    def build(case: Path, study: Path) -> list:
        db = case / "run" / "study.db"
        if kind == "foreign":
            foreign_db(db)
        elif kind == "garbage":
            db.parent.mkdir()
            db.write_text("these are my notes, not a database\n" * 10)
        else:
            db.parent.mkdir()
            os.mkfifo(db)
            (case / "sha").write_text("")
            return [*SEARCH, "--out", str(case / "run")]
        (case / "sha").write_text(hashlib.sha256(db.read_bytes()).hexdigest())
        return [*SEARCH, "--out", str(case / "run")]
    return build


def _symlink_out(case: Path, study: Path) -> list:
    (case / "link.json").symlink_to("real.json")
    return ["scale", "--base", tiny(case), "--target", "m", "--out", str(case / "link.json")]


def _huge_file(case: Path, study: Path) -> list:
    return ["profile", spec_file(case / "big.json", json.dumps({**TINY, "name": "x" * (2 << 20)})), "--no-time"]


CASES = [
    # --- outputs
    ("out-symlink-written-through", "outputs", "nas scale --out LINK, a symlink to a new file",
     "written through: the link stays a link, its target is the spec", _symlink_out, None, _written_through),
    ("out-fifo", "outputs", "nas scale --out FIFO", "exit 2, one line; the FIFO is still a FIFO",
     lambda c, s: ["scale", "--base", tiny(c), "--target", "m", "--out", str(fifo(c / "pipe"))], r"a FIFO",
     _still("pipe", stat.S_ISFIFO)),
    ("out-device", "outputs", "nas report RUN --out /dev/null (a device node; as root too)",
     "exit 2, one line; /dev/null is still a character device",
     lambda c, s: ["report", str(s), "--out", "/dev/null"], r"a device", _still("/dev/null", stat.S_ISCHR)),
    ("best-out-device", "outputs", "nas best RUN --out /dev/null", "exit 2, one line; the device is untouched",
     lambda c, s: ["best", str(s), "--out", "/dev/null"], r"a device", _still("/dev/null", stat.S_ISCHR)),
    ("out-root", "outputs", "nas scale --out / (as root)", "exit 2, one line; nothing written into /",
     lambda c, s: ["scale", "--base", tiny(c), "--target", "m", "--out", "/"], r"a directory", _nothing),
    ("report-out-directory", "outputs", "nas report RUN --out DIR, an existing directory",
     "exit 2, one line; nothing written in DIR",
     lambda c, s: ["report", str(s), "--out", str(c)], r"a directory", lambda c, r: _empty(c)),
    ("out-missing-directory", "outputs", "nas best RUN --out in a folder that does not exist",
     "exit 2, one line naming the folder", lambda c, s: ["best", str(s), "--out", str(c / "no" / "b.json")],
     r"does not exist", _nothing),
    ("out-unwritable", "outputs", "nas scale --out /proc/x.json (a folder nobody may create files in)",
     "exit 2, one line", lambda c, s: ["scale", "--base", tiny(c), "--target", "m", "--out", "/proc/effnas.json"],
     r"cannot write --out /proc/effnas.json", _nothing),
    ("search-foreign-sqlite", "outputs", "nas search --out D where D/study.db is another program's SQLite database",
     "exit 2, one line, before Optuna adds a table: the file keeps its bytes", _prepare_db("foreign"),
     r"another program's SQLite database", _db_kept("foreign")),
    ("search-study-not-sqlite", "outputs", "nas search --out D where D/study.db is a text file",
     "exit 2, one line; the file keeps its bytes", _prepare_db("garbage"), r"not an SQLite database",
     _db_kept("garbage")),
    ("search-study-fifo", "outputs", "nas search --out D where D/study.db is a FIFO", "exit 2, one line, no hang",
     _prepare_db("fifo"), r"not a regular file", _still("run/study.db", stat.S_ISFIFO)),
    # --- reads
    ("spec-fifo", "reads", "spec file that is a FIFO (nas profile)", "exit 2, one line, no hang",
     lambda c, s: ["profile", str(fifo(c / "spec.json")), "--no-time"], r"not a regular file", _nothing),
    ("spec-oversized", "reads", "2 MiB spec file", "exit 2, one line (cap 1 MiB), file not parsed", _huge_file,
     r"more than a spec JSON file may have", _short),
    ("spec-deep-nesting", "reads", "spec JSON nested 100,000 levels deep", "exit 2, one line (nesting cap 32)",
     lambda c, s: ["profile", spec_file(c / "s.json", "[" * 100_000 + "]" * 100_000), "--no-time"],
     r"nested more than 32 levels", _nothing),
    ("spec-nan-literal", "reads", "spec JSON with NaN for a number", "exit 2, one line",
     lambda c, s: ["profile", spec_file(c / "s.json", json.dumps(TINY).replace('"stem_channels": 8',
                                                                               '"stem_channels": NaN')), "--no-time"],
     r"NaN is not a JSON number", _nothing),
    ("spec-huge-integer", "reads", "spec JSON with a 10,000-digit integer", "exit 2, one line",
     lambda c, s: ["profile", spec_file(c / "s.json", json.dumps(TINY).replace('"stem_channels": 8',
                                                                               '"stem_channels": ' + "9" * 10_000)),
                   "--no-time"], r"not valid JSON", _short),
    ("spec-long-value", "reads", "spec field holding a 500,000-character string", "exit 2, one short line",
     lambda c, s: ["profile", tiny(c, stem_channels="8" * 500_000), "--no-time"], r"stem_channels: must be an "
     r"integer, got '8888", _short),
    ("spec-too-many-stages", "reads", "spec with 40 stages", "exit 2, one line (at most 32)",
     lambda c, s: ["profile", tiny(c, stages=["r1_k3_s1_e1_i8_o8_c1"] * 40), "--no-time"], r"at most 32 stages",
     _nothing),
    ("spec-huge-kernel", "reads", "spec with kernel 999", "exit 2, one line (kernel <= 15)",
     lambda c, s: ["profile", tiny(c, stages=["r1_k999_s1_e1_i8_o8_c1"]), "--no-time"], r"kernel: must be <= 15",
     _nothing),
    ("spec-huge-head", "reads", "spec with head_channels 10^9", "exit 2, one line (<= 8192)",
     lambda c, s: ["profile", tiny(c, head_channels=10**9), "--no-time"], r"head_channels: must be <= 8192", _nothing),
    ("spec-many-classes", "reads", "spec with num_classes 10^9", "exit 2, one line (<= 100,000)",
     lambda c, s: ["profile", tiny(c, num_classes=10**9), "--no-time"], r"num_classes: must be <= 100000", _nothing),
    ("spec-over-memory", "reads", "nas profile of a spec within every bound but far beyond the machine's memory",
     "exit 2, one line naming the estimate and the limit, before anything is built",
     lambda c, s: ["profile", spec_file(c / "s.json", json.dumps(HUGE)), "--device", "cpu"],
     r"needs an estimated [\d,.]+ GiB to train, more than this machine's memory", _nothing),
    ("train-over-memory", "reads", "nas train --arch of that spec", "exit 2, one line, nothing written",
     lambda c, s: ["train", "--arch", spec_file(c / "s.json", json.dumps(HUGE)), "--device", "cpu", "--out",
                   str(c / "run")], r"needs an estimated .* GiB", lambda c, r: (not (c / "run").exists()) or
     pytest.fail("run directory written")),
    ("search-over-trial-memory", "reads", "nas search on an existing study with a backbone over --trial-memory 0.001",
     "exit 2, one line naming the estimate and the limit; the study unchanged",
     lambda c, s: [*SEARCH, "--out", str(s), "--trial-memory", "0.001"], r"more than --trial-memory 0.001 GiB",
     _nothing),
    ("space-fifo", "reads", "nas search --space FIFO", "exit 2, one line, no hang",
     lambda c, s: [*SEARCH, "--space", str(fifo(c / "space.json")), "--out", str(c / "run")], r"not a regular file",
     _nothing),
    ("space-yaml-alias", "reads", "YAML space file with nested aliases (billion laughs)",
     "exit 2, one line: aliases refused before they expand",
     lambda c, s: [*SEARCH, "--space", space(c, billion_laughs(), "space.yaml"), "--out", str(c / "run")],
     r"YAML aliases .* not allowed", _nothing),
    ("space-deep-nesting", "reads", "space JSON nested 10,000 levels deep", "exit 2, one line",
     lambda c, s: [*SEARCH, "--space", space(c, '{"choices": ' + "[" * 10_000 + "]" * 10_000 + "}"), "--out",
                   str(c / "run")], r"nested more than 32 levels", _nothing),
    ("search-workers-huge", "reads", "nas search --workers 100000", "exit 2, one line (at most 4 per CPU core)",
     lambda c, s: [*SEARCH, "--workers", "100000", "--out", str(s)], r"--workers", _nothing),
    ("synthetic-huge", "reads", "--data synthetic:100000000x1024 (300 TB)", "exit 2, one line before generating",
     lambda c, s: [*SEARCH[:-1], "synthetic:100000000x1024", "--out", str(c / "run")],
     r"would take [\d,.]+ GiB in memory", _nothing),
    # --- decoders
    ("npz-header-huge", "decoders", ".npz whose x.npy header claims 10^12 elements",
     "exit 2, one line, nothing allocated",
     lambda c, s: [*SEARCH[:-1], npz_claiming(c / "d.npz", (10**12,)), "--out", str(c / "run")],
     r"header claims 1,000,000,000,000 elements", _nothing),
    ("npz-deflate-lie", "decoders", ".npz whose zip directory claims 4 GB from a few hundred deflated bytes",
     "exit 2, one line, nothing decompressed",
     lambda c, s: [*SEARCH[:-1], npz_deflate_lie(c / "d.npz"), "--out", str(c / "run")],
     r"more than deflate can hold", _nothing),
    ("cifar-huge-array", "decoders", "CIFAR batch asking the allowed array reconstructor for 10^12 elements",
     "exit 2, one line, nothing allocated",
     lambda c, s: [*SEARCH[:-1], cifar_huge(c), "--out", str(c / "run")], r"more than the file holds", _nothing),
    ("imagefolder-header-bombs", "decoders", "ImageFolder whose PNGs claim 20,000 x 20,000 pixels",
     "each skipped with a warning naming it, then exit 2: no readable images",
     lambda c, s: [*SEARCH[:-1], imagefolder_of_bombs(c), "--out", str(c / "run")], r"no readable images",
     _warned_each),
    # --- numbers
    ("search-reward-v-nan", "numbers", "nas search --reward-v nan", "exit 2, one line; the study unchanged",
     lambda c, s: [*SEARCH, "--out", str(s), "--reward-v", "nan"], r"--reward-v: must be a finite number", _nothing),
    ("search-reward-w-inf", "numbers", "nas search --reward-w inf", "exit 2, one line; the study unchanged",
     lambda c, s: [*SEARCH, "--out", str(s), "--reward-w", "inf"], r"--reward-w: must be a finite number", _nothing),
    ("search-trial-timeout-nan", "numbers", "nas search --trial-timeout nan", "exit 2, one line; the study unchanged",
     lambda c, s: [*SEARCH, "--out", str(s), "--trial-timeout", "nan"], r"--trial-timeout: must be a finite",
     _nothing),
    ("scale-phi-nan", "numbers", "nas scale --phi nan", "exit 2, one line",
     lambda c, s: ["scale", "--base", tiny(c), "--phi", "nan"], r"--phi: must be a finite number", _nothing),
    ("train-lr-inf", "numbers", "nas train --lr inf", "exit 2, one line",
     lambda c, s: ["train", "--arch", tiny(c), "--lr", "inf", "--out", str(c / "run")], r"--lr: must be a finite",
     _nothing),
    # --- names
    ("spec-name-control-chars", "names", "spec whose name holds terminal escapes (ESC[2J clears the screen)",
     "exit 2, one line; no control character printed",
     lambda c, s: ["profile", tiny(c, name="evil\x1b[2J\x1b[31m"), "--no-time"],
     r"control characters are not allowed in a name", _no_escape),
    ("space-name-control-chars", "names", "space whose name holds a carriage return and escapes",
     "exit 2, one line; no control character printed",
     lambda c, s: [*SEARCH, "--space", space(c, json.dumps({"name": "ok\r\x1b[31mfake"})), "--out", str(c / "run")],
     r"control characters are not allowed", _no_escape),
    ("path-control-chars", "names", "spec path holding escapes and a newline (echoed in the error)",
     "exit 2, one line with the characters escaped",
     lambda c, s: ["profile", str(c / "evil\x1b[31m\nnas: ok.json"), "--no-time"], r"no such file", _no_escape),
    # --- secrets
    ("search-storage-password", "secrets", f"nas search --storage {PG_URL} (server down)",
     "exit 2, one line; the password never printed",
     lambda c, s: [*SEARCH, "--storage", PG_URL, "--out", str(c / "run")], r"\*\*\*", _no_secret),
    ("report-storage-password", "secrets", "nas report on that URL", "exit 2, one line; the password never printed",
     lambda c, s: ["report", PG_URL, "--format", "json"], r"cannot open storage", _no_secret),
    ("best-storage-password", "secrets", "nas best on that URL", "exit 2, one line; the password never printed",
     lambda c, s: ["best", PG_URL], r"cannot open storage", _no_secret),
]


def study_state(db: Path) -> tuple[str, int, str]:
    """What must not change: integrity_check's answer, the trial count and the file's bytes."""
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        trials = connection.execute("SELECT count(*) FROM trials").fetchone()[0]
    connection.close()
    return integrity, trials, hashlib.sha256(db.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """An existing study (made in-process: Optuna with one finished trial), every case's files, then every case
    through the real CLI in one subprocess (:mod:`tests.cli_driver`)."""
    import optuna

    from effnas.results.record import STUDY_NAME

    root = tmp_path_factory.mktemp("hostile")
    study_dir = root / "study"
    study_dir.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{study_dir / 'study.db'}")
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 2), n_trials=1)
    del study
    before = study_state(study_dir / "study.db")
    plan = []
    for case in CASES:
        case_dir = root / case[0]
        case_dir.mkdir()
        plan.append({"id": case[0], "argv": case[4](case_dir, study_dir), "cwd": case_dir})
    results = {name: (root / name, result) for name, result in run_commands(plan, root).items()}
    return results, before, study_state(study_dir / "study.db")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_in_one_line_and_replaces_nothing(case, outcomes):
    results, before, after = outcomes
    case_dir, result = results[case[0]]
    if case[5] is None:
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
    else:
        warned = [line for line in result.stderr.splitlines() if "skipping unreadable image" in line]
        lines = [line for line in result.stderr.splitlines() if line.strip() and line not in warned
                 and not line.startswith("  ")]
        assert len(lines) == 1, result.stderr[-2000:]
        assert_one_line_error(result, case[5], warnings_allowed=bool(warned))
    case[6](case_dir, result)
    assert after == before and after[:2] == ("ok", 1), "the existing study changed"


FAULTS = [(c[0], f"{c[1]}: {c[2]}", c[3]) for c in CASES]
