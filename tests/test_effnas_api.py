"""The Python API is the commands' engine: each function's keyword defaults are its command's flag defaults,
``import effnas`` loads no torch, and the commands' usage mistakes say "did you mean"."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from effnas import api
from effnas.nas.cli.main import build_parser
from effnas.results.study import controller_of

ROOT = Path(__file__).resolve().parents[1]
# command -> (the API function, its positional argument on the command line, CLI dest -> API name where they differ)
COMMANDS = {
    "search": (api.search, [], {}),
    "train": (api.train, ["--arch", "x"], {"no_progressive": "progressive"}),
    "compare": (api.compare, ["RUN"], {}),
    "scale": (api.scale, ["--base", "x"], {}),
}
NEGATED = {"early_stopping": ("on", True), "no_progressive": (False, True)}  # CLI default -> API default


def sub_parser(name: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices[name]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_is_a_keyword_with_the_same_default(command):
    function, required, renamed = COMMANDS[command]
    args = vars(sub_parser(command).parse_args(required))
    args.pop("run")
    keywords = inspect.signature(function).parameters
    for dest, default in args.items():
        name = renamed.get(dest, dest)
        assert name in keywords, f"nas {command}: --{dest} has no keyword {name!r} in effnas.{command}"
        parameter = keywords[name]
        if parameter.default is inspect.Parameter.empty:
            continue  # positional in both: --arch, --base, RUN
        if dest in NEGATED:
            assert (default, parameter.default) == NEGATED[dest], dest
        elif isinstance(default, list):
            assert list(parameter.default) == default, dest
        else:
            assert parameter.default == default, f"nas {command} --{dest}: {default!r} != {parameter.default!r}"


def test_export_flags_match_the_function():
    from effnas.exporting import FORMATS, export
    from effnas.nas.cli.export import FORMATS as CLI_FORMATS

    args = vars(sub_parser("export").parse_args(["x", "--format", "onnx", "--out", "y"]))
    keywords = inspect.signature(export).parameters
    assert set(args) - {"run", "path"} <= set(keywords)
    assert tuple(FORMATS) == CLI_FORMATS


def test_import_effnas_loads_no_torch_and_the_api_loads_on_first_use():
    code = ("import sys, effnas\n"
            "assert 'torch' not in sys.modules and 'effnas.api' not in sys.modules\n"
            "assert callable(effnas.search) and 'effnas.api' in sys.modules and 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    import effnas
    import effnas.exporting  # the module is not the function: effnas.export stays callable after it loads

    assert callable(effnas.export) and effnas.export.__module__ == "effnas.exporting"
    assert sorted(effnas.__all__) == effnas.__all__ and all(hasattr(effnas, name) for name in effnas.__all__)


@pytest.mark.parametrize("argv, expected", [
    (["serch"], "(did you mean 'search'?) (see 'nas --help')"),
    (["search", "--budgt", "3"], "(did you mean --budget?) (see 'nas search --help')"),
    (["train", "--arch", "x", "--epohcs", "1"], "(did you mean --epochs?)"),
    (["export", "x", "--format", "onx", "--out", "y"], "(did you mean 'onnx'?)"),
])
def test_a_mistyped_command_choice_or_flag_gets_a_suggestion(argv, expected, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err


def test_nothing_close_gets_no_suggestion(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--zzzzzz"])
    assert "did you mean" not in capsys.readouterr().err


def test_a_mistyped_run_directory_gets_the_closest_one_suggested(tmp_path):
    from effnas.api import compare
    from effnas.errors import EffnasError
    from effnas.results import ResultsError, open_study

    (tmp_path / "runs-fmnist").mkdir()
    (tmp_path / "zzz").mkdir()
    with pytest.raises(ResultsError, match=r"did you mean '.*runs-fmnist'\?\)$"):
        open_study(tmp_path / "runs-fmnsit")  # nas report and nas best
    with pytest.raises(EffnasError, match=r"did you mean '.*runs-fmnist'\?\)$"):
        compare(tmp_path / "runs-fmnsit")
    with pytest.raises(ResultsError) as far:
        open_study(tmp_path / "qqqqqq")
    assert "did you mean" not in str(far.value)


def test_trials_cut_off_by_ctrl_c_count_as_interrupted_not_failed():
    import pandas as pd

    from effnas.results.analysis import state_counts
    from effnas.results.record import INTERRUPTED_ATTR

    frame = pd.DataFrame({"state": ["COMPLETE", "FAIL", "FAIL", "PRUNED"],
                          INTERRUPTED_ATTR: [False, True, False, False]})
    counts = state_counts(frame)
    assert (counts["completed"], counts["failed"], counts["interrupted"], counts["stopped early"]) == (1, 1, 1, 1)


def test_the_report_names_the_controller_its_settings_hold():
    assert controller_of({"recipe": {"controller": "tpe"}, "runtime": {}}) == "tpe"
    assert controller_of({"controller": "rl"}) == "rl"
    assert controller_of({}) is None and controller_of(None) is None


def test_search_data_is_read_from_the_recipe_the_study_stores(monkeypatch):
    class Study:
        user_attrs = {"settings": {"recipe": {"trial": {"data": "idx:/data/fashion"}}, "runtime": {}}}

    monkeypatch.setattr("effnas.results.open_study", lambda run_dir: Study())
    assert api._search_data(Path("run")) == "idx:/data/fashion"
