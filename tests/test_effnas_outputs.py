"""effnas.outputs: which files are recognised as effnas's and of which kind, which output paths may be replaced, and
which folders may serve as a run directory; a refusal never changes a byte. Through the CLI: tests/test_faults_outputs.py."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from effnas.errors import EffnasError
from effnas.outputs import OutputRefused, claim_output, claim_run_dir, file_kind

SPEC = {"stem_channels": 8, "head_channels": 32, "stages": ["r1_k3_s1_e1_i8_o8_c1"]}


def sqlite_db(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (x TEXT)")
    db.close()
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_file_kinds_are_recognised_by_content(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"model": {}}, tmp_path / "last.pt")
    cases = {
        "empty": write(tmp_path / "empty", ""),
        "sqlite": sqlite_db(tmp_path / "db"),
        "journal": write(tmp_path / "journal.log", json.dumps({"op_code": 0, "worker_id": "x"}) + "\n"),
        "spec": write(tmp_path / "spec.json", json.dumps(SPEC)),
        "report": write(tmp_path / "r.html", "<!DOCTYPE html>\n<html><head><title>effnas report: run</title>"),
        "trials-table": write(tmp_path / "t.csv", "number,state,s0_op\n0,COMPLETE,fused\n"),
        "pareto": write(tmp_path / "p.json", json.dumps([{"blocks": "x", "spec": SPEC}])),
        "metrics-log": write(tmp_path / "m.csv", "epoch,stage,image_size,dropout\n"),
        "checkpoint": tmp_path / "last.pt",
        "training-metrics": write(tmp_path / "metrics.json", json.dumps({"top1": 0.5, "stages": 2, "schedule": [],
                                                                          "recipe": {}, "spec": SPEC})),
        "compare-results": write(tmp_path / "compare.json", json.dumps({"rows": [], "curves": {}})),
        "compare-table": write(tmp_path / "compare.csv", "model,kind,top1,params\n"),
        "training-plot": write(tmp_path / "training.html", "<html><body><script>{\"text\":\"nas train: tiny\"}"),
    }
    assert {kind: file_kind(path) for kind, path in cases.items()} == {kind: kind for kind in cases}
    assert file_kind(write(tmp_path / "wrapped.json", json.dumps({"spec": SPEC, "metrics": {}}))) == "spec"
    for foreign in ("my notes\n", "a,b\n1,2\n", json.dumps({"name": "mine"}), "<html><title>mine</title>"):
        assert file_kind(write(tmp_path / "foreign", foreign)) is None
    assert file_kind(tmp_path) is None and file_kind(tmp_path / "missing") is None


def test_claim_output_replaces_only_what_loses_nothing(tmp_path):
    spec = write(tmp_path / "s.json", json.dumps(SPEC))
    assert claim_output(spec, "spec") == spec.resolve()  # the same command again
    assert claim_output(tmp_path / "new.json", "spec") == (tmp_path / "new.json").resolve()
    assert claim_output(write(tmp_path / "empty.json", ""), "spec")
    with pytest.raises(OutputRefused, match=r"--out .*s.json: it holds an architecture spec, not a search report.*--force"):
        claim_output(spec, "report", "--out")
    assert claim_output(spec, "report", force=True) == spec.resolve()  # effnas wrote it: --force may replace it
    db, notes = sqlite_db(tmp_path / "study.db"), write(tmp_path / "notes.txt", "mine\n")
    before = db.read_bytes(), notes.read_bytes()
    for path, message in ((db, "an SQLite database, a study"), (notes, "a file effnas did not write")):
        for force in (False, True):  # never, --force or not
            with pytest.raises(OutputRefused, match=message):
                claim_output(path, "report", "--out", force=force)
    assert (db.read_bytes(), notes.read_bytes()) == before
    assert issubclass(OutputRefused, EffnasError)


def test_claim_output_follows_a_symlink_to_what_it_would_replace(tmp_path):
    notes = write(tmp_path / "notes.txt", "mine\n")
    (tmp_path / "link.html").symlink_to(notes)
    with pytest.raises(OutputRefused, match="did not write"):
        claim_output(tmp_path / "link.html", "report")


def test_a_run_directory_is_new_empty_or_a_run_of_the_same_kind(tmp_path):
    assert claim_run_dir(tmp_path / "new", "search") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / ".study.db.lock", "")  # housekeeping only: still empty
    assert claim_run_dir(tmp_path / "empty", "search")
    run = tmp_path / "run"
    run.mkdir()
    sqlite_db(run / "study.db")
    write(run / "trials.csv", "number,state,reward\n")
    write(run / "best.json", json.dumps({"spec": SPEC}))
    write(run / "report.html", json.dumps(SPEC))  # a spec where a report usually is: still effnas's
    write(run / "m" / "metrics.csv", "epoch,stage,image_size,\n")  # a training run inside: effnas's too
    write(run / "compare.json", json.dumps({"rows": [], "curves": {}}))  # nas compare's, into the search run
    write(run / "compare" / "tiny" / "metrics.csv", "epoch,stage,image_size,\n")
    sqlite_db(write(run / "nested" / "study.db", "").parent / "study.db")  # a search run inside the search run
    write(run / "nested" / "study.db-wal", "")
    assert claim_run_dir(run, "search") == run == claim_run_dir(run, "compare")
    trained = tmp_path / "trained"
    write(trained / "metrics.csv", "epoch,stage,image_size,\n")
    write(trained / "metrics.json", json.dumps({"schedule": [], "recipe": {}, "spec": SPEC}))
    assert claim_run_dir(trained, "train") == trained
    stopped = tmp_path / "stopped"  # a compare stopped during its first network: no table yet, and it resumes
    write(stopped / "compare" / "searched" / "metrics.csv", "epoch,stage,image_size,\n")
    assert claim_run_dir(stopped, "compare") == stopped
    with pytest.raises(OutputRefused, match="a file effnas did not write"):
        write(tmp_path / "mine" / "compare" / "notes.txt", "mine")
        claim_run_dir(tmp_path / "mine", "compare")


@pytest.mark.parametrize("layout, kind, message", [
    ({"trials.csv": "a,b\n"}, "search", r"trials.csv, a file effnas did not write"),
    ({"notes.txt": "mine", "study.db": ""}, "search", r"notes.txt, a file effnas did not write"),
    ({"sub/data.bin": "x", "study.db": ""}, "search", r"sub/data.bin, a file effnas did not write"),
    ({"m.json": json.dumps(SPEC)}, "search", r"holds files \(m.json\) but is not a search run"),
    ({"trials.csv": json.dumps(SPEC)}, "search", r"an architecture spec where a search's trials table"),
    ({"last.pt": ""}, "search", r"holds last.pt of another kind of run"),
    ({"study.db": ""}, "train", r"holds study.db of another kind of run"),
    ({"other.db": "SQLITE"}, "search", r"an SQLite database that is not this run's study"),
])
def test_a_folder_of_other_files_is_refused_and_kept(tmp_path, layout, kind, message):
    folder = tmp_path / "out"
    for name, text in layout.items():
        if text == "SQLITE":
            folder.mkdir(exist_ok=True)
            sqlite_db(folder / name)
        else:
            write(folder / name, text)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(OutputRefused, match=message):
        claim_run_dir(folder, kind)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_a_file_is_no_run_directory_and_the_storage_file_may_live_in_one(tmp_path):
    db = sqlite_db(tmp_path / "study.db")
    with pytest.raises(OutputRefused, match=r"--out .*study.db as a run directory: it holds an SQLite database, not a "
                                            r"folder"):
        claim_run_dir(db, "search")
    run = tmp_path / "run"
    write(run / "shared.log", json.dumps({"op_code": 0}) + "\n")
    write(run / "shared.log.lock", "")
    with pytest.raises(OutputRefused, match="shared.log"):
        claim_run_dir(run, "search")
    assert claim_run_dir(run, "search", own_files=[run / "shared.log"]) == run
