"""`nas report` and `nas best` end to end: every format, the HTML in a real browser, one-line errors."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from effnas.nas.cli.main import main
from effnas.results import completed, open_study, pareto_front, trials_frame, with_fronts
from effnas.search_space import load_spec
from tests.test_results_study import make_run, shared_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def nas(*argv: str) -> tuple[int, str]:
    """Run the CLI in this process (fast); returns exit code and stdout."""
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(list(argv))
    return code, buffer.getvalue()


def nas_subprocess(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnas.nas", *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[1])


def plot_traces(page: str, div_id: str) -> list[dict]:
    """The data array a ``Plotly.newPlot("div_id", [...])`` call in the page draws."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    assert match, f"no plot {div_id}"
    traces, _ = json.JSONDecoder().raw_decode(page, match.end())
    return traces


def plotly_array(value) -> np.ndarray:
    """A trace array as plotly wrote it: a JSON list, or base64 ``bdata`` with a dtype (plotly >= 6)."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def plotted_trials(traces: list[dict], name_part: str = "") -> set[int]:
    return {int(point[0]) for trace in traces if name_part in trace.get("name", "")
            for point in trace.get("customdata", [])}


@pytest.fixture(scope="module")
def html_report(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("html") / "report.html"
    code, stdout = nas("report", str(shared_run()), "--out", str(out))
    assert code == 0 and f"wrote {out}" in stdout
    return out, out.read_text(encoding="utf-8")


def test_html_report_shows_every_completed_trial_and_every_front_point(html_report):
    path, page = html_report
    frame = trials_frame(open_study(shared_run()))
    done = set(completed(frame)["number"])
    marked = with_fronts(frame)
    external = re.search(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//', page)
    assert external is None, external.group(0)  # self-contained: opens offline, no CDN
    assert path.stat().st_size > 3_000_000  # plotly.js is embedded
    for div_id, pair in (("plot-time", "pareto_accuracy_step_time"), ("plot-params", "pareto_accuracy_params")):
        traces = plot_traces(page, div_id)
        assert plotted_trials(traces, "trials") | plotted_trials(traces, "all 3") == done
        assert plotted_trials(traces, "all 3") == set(marked.loc[marked["pareto"], "number"])
        assert plotted_trials(traces, "these two") == set(marked.loc[marked[pair], "number"])
        hover = next(t for t in traces if "all 3" in t["name"])
        assert all(point[5].startswith("r") and "<br>" in point[5] for point in hover["customdata"])
    reward = plot_traces(page, "plot-reward")
    assert set(plotly_array(reward[0]["x"]).astype(int)) == done
    assert plotly_array(reward[1]["y"]).max() == pytest.approx(frame["reward"].max())
    table = page[page.index('id="front-table"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'<tr><td class="num" data-sort="(\d+)\.0">', table)
    assert sorted(map(int, rows)) == sorted(pareto_front(frame)["number"])
    for reason in ("out of memory", "diverged: loss is nan", "interrupted"):
        assert reason in page
    assert "<code>tpe</code>" in page  # the search settings


def _chromium(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chr'}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", *extra, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_html_report_renders_in_headless_chromium_without_errors(html_report, tmp_path):
    path, page = html_report
    result = _chromium(path, tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert 'id="report-status" data-status="rendered"' in result.stdout
    assert '<pre class="effnas-error"' not in result.stdout
    assert result.stdout.count('class="main-svg"') >= 4
    # The check can fail: the same page with a broken script is caught.
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("<h1>", "<script>notAFunction();</script><h1>", 1), encoding="utf-8")
    result = _chromium(broken, tmp_path, "--dump-dom")
    assert '<pre class="effnas-error">JavaScript error: Uncaught ReferenceError: notAFunction' in result.stdout
    assert 'data-status="rendered"' not in result.stdout


def test_default_html_path_is_the_run_directory(tmp_path):
    run = make_run(tmp_path, trials=4, failed=0, interrupted=0)
    code, stdout = nas("report", str(run))
    assert code == 0 and (run / "report.html").is_file() and "4 trials" in stdout


def test_csv_json_and_markdown_parse(capsys):
    run = shared_run()
    frame = trials_frame(open_study(run))
    front = set(pareto_front(frame)["number"])

    code, text = nas("report", str(run), "--format", "csv")
    table = pd.read_csv(io.StringIO(text))
    assert code == 0 and list(table["number"]) == list(frame["number"])
    assert set(table.loc[table["pareto"], "number"]) == front and "spec" not in table.columns

    code, text = nas("report", str(run), "--format", "json")
    data = json.loads(text)
    assert code == 0 and [t["number"] for t in data["trials"]] == list(frame["number"])
    assert set(data["fronts"]["pareto"]) == front and data["best"]["trial"] == int(
        frame.loc[frame["reward"].idxmax(), "number"])
    assert data["study"]["settings"]["controller"] == "tpe" and data["trials"][0]["spec"]["stages"]

    code, text = nas("report", str(run), "--format", "markdown")
    rows = [line for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert code == 0 and text.startswith("# effnas search report")
    assert {int(line.split("|")[1]) for line in rows} == front


def test_best_exports_a_spec_that_load_spec_reads(tmp_path):
    run = shared_run()
    frame = trials_frame(open_study(run))
    done = completed(frame)
    limit = float(done["params"].quantile(0.4))
    out = tmp_path / "pick.json"
    code, stdout = nas("best", str(run), "--max-params", str(limit), "--out", str(out))
    assert code == 0 and "wrote" in stdout
    data = json.loads(out.read_text())
    fits = done[done["params"] <= limit]
    assert data["metrics"]["trial"] == int(fits.loc[fits["reward"].idxmax(), "number"])
    assert data["metrics"]["params"] <= limit
    spec = load_spec(out)
    assert spec.to_dict() == frame.loc[data["metrics"]["trial"], "spec"]

    code, stdout = nas("best", str(run), "--trial", "3")
    assert code == 0 and json.loads(stdout)["metrics"]["trial"] == 3


@pytest.mark.parametrize("argv, message", [
    (["report", "{tmp}/nowhere"], "no such study"),
    (["report", "{empty}"], "the study has no trials yet"),
])
def test_missing_or_empty_study_is_one_line_and_exit_2(tmp_path, argv, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    optuna.create_study(storage=f"sqlite:///{empty / 'study.db'}", study_name="effnas")
    result = nas_subprocess(*[a.format(tmp=tmp_path, empty=empty) for a in argv])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("argv, message", [
    (["best", "{run}", "--max-params", "10"], "no completed trial has params <= 10"),
    (["best", "{run}", "--trial", "26"], "trial 26 is FAIL: out of memory; only completed"),
    (["best", "{run}", "--trial", "2", "--max-params", "5e6"], "cannot be combined"),
    (["report", "{run}", "--format", "csv", "--out", "x.html"], "--out is for the HTML report"),
])
def test_bad_requests_are_one_line_and_exit_2(capsys, argv, message):
    assert main([a.format(run=shared_run()) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


# ---------------------------------------------------------------- a small real search, then its report
@pytest.fixture(scope="module")
def searched_run(tmp_path_factory) -> Path:
    """``nas search`` as a user runs it: tiny synthetic data, a width-reduced space, 2 trials."""
    root = tmp_path_factory.mktemp("search")
    space = root / "space.json"
    space.write_text(json.dumps({"width": 0.25, "depth": 0.25, "image_size": 32, "head_channels": 32}))
    result = nas_subprocess("search", "--budget", "2", "--controller", "random", "--data", "synthetic:160x16",
                            "--epochs", "1", "--batch-size", "32", "--image-size", "32", "--space", str(space),
                            "--device", "cpu", "--seed", "3", "--quiet", "--out", str(root / "run"), timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


@pytest.mark.slow
def test_report_of_a_real_search_has_every_trial_and_front_point(searched_run, tmp_path):
    frame = trials_frame(open_study(searched_run))
    done = set(completed(frame)["number"])
    assert len(done) == 2  # tiny candidates on synthetic data train without failing
    code, stdout = nas("report", str(searched_run))
    page = (searched_run / "report.html").read_text(encoding="utf-8")
    assert code == 0 and "report.html" in stdout
    traces = plot_traces(page, "plot-time")
    assert plotted_trials(traces, "trials") | plotted_trials(traces, "all 3") == done
    front = set(pareto_front(frame)["number"])
    assert plotted_trials(traces, "all 3") == front
    rows = re.findall(r'<tr><td class="num" data-sort="(\d+)\.0">', page[page.index('id="front-table"'):])
    assert set(map(int, rows)) == front
    assert "<code>random</code>" in page and "trial.epochs" in page  # the search's own settings
    # The runner's pareto.json and the report agree on the front.
    assert {p["trial"] for p in json.loads((searched_run / "pareto.json").read_text())} == front
    code, text = nas("report", str(searched_run), "--format", "json")
    assert set(json.loads(text)["fronts"]["pareto"]) == front
    if CHROMIUM:
        result = _chromium(searched_run / "report.html", tmp_path, "--dump-dom")
        assert 'data-status="rendered"' in result.stdout
        assert not [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
def test_best_of_a_real_search_builds_and_runs(searched_run, tmp_path):
    import torch

    from effnas.models import build_model

    out = tmp_path / "pick.json"
    assert nas("best", str(searched_run), "--out", str(out))[0] == 0
    picked = json.loads(out.read_text())
    assert picked["metrics"] == {k: v for k, v in json.loads((searched_run / "best.json").read_text())["metrics"]
                                 .items() if k in picked["metrics"]}
    spec = load_spec(out)
    model = build_model(spec).eval()
    size = spec.eval_image_size
    with torch.no_grad():
        assert model(torch.zeros(2, spec.image_channels, size, size)).shape == (2, spec.num_classes)


def test_html_report_shows_nas_compare_results_when_the_run_has_them(tmp_path):
    run = make_run(tmp_path, trials=4, failed=0, interrupted=0)
    curves = {"searched": [{"epoch": 1, "ema_val_acc": 0.5, "train_loss": 2.0},
                           {"epoch": 2, "ema_val_acc": 0.8, "train_loss": 0.7}],
              "mobilenetv2": [{"epoch": 1, "ema_val_acc": 0.4, "train_loss": 2.2},
                              {"epoch": 2, "ema_val_acc": 0.7, "train_loss": 0.9}]}
    rows = [{"model": "searched", "kind": "searched", "top1": 0.8, "params": 12345, "macs": 678,
             "train_seconds": 3.0, "images_per_second": 100.0, "step_time_ms": 5.0},
            {"model": "mobilenetv2", "kind": "zoo", "top1": 0.7, "params": 2234567, "macs": 9999,
             "train_seconds": 9.0, "images_per_second": 30.0, "step_time_ms": 15.0},
            {"model": "random-forest", "kind": "classical", "top1": 0.9, "params": None, "macs": None,
             "train_seconds": 1.0, "images_per_second": 1000.0, "step_time_ms": None}]
    code, _ = nas("report", str(run))
    assert code == 0 and "Against the alternatives" not in (run / "report.html").read_text(encoding="utf-8")
    (run / "compare.json").write_text(json.dumps({"rows": rows, "curves": curves}))
    code, _ = nas("report", str(run))
    page = (run / "report.html").read_text(encoding="utf-8")
    assert code == 0 and "Against the alternatives" in page
    assert all(f">{row['model']}<" in page for row in rows) and ">2,234,567<" in page
    traces = plot_traces(page, "plot-compare")
    assert {trace["name"] for trace in traces} == set(curves)
    assert any(trace.get("yaxis") == "y2" for trace in traces)  # the loss panel
