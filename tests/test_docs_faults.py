"""docs/faults.md lists every fault test: each test collected from ``tests/test_faults_*.py`` (plain or
parametrized) is one of the table's rows, and each row has a test.

``test_docs_table_is_current`` (tests/test_faults_inputs.py) checks that the page is what the modules' ``FAULTS``
lists render to; this checks that those lists cover every test, so a fault test added without a row, or a row
whose test was removed, fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "faults.md"
NOT_A_FAULT = {"test_faults_inputs.py::test_docs_table_is_current"}  # the page's own check
# Tests whose row is not named by their parameter id: "module::test" or "module::test[id]" -> the row's case.
# A parametrized test not listed here is the row named by its id (seeded ids lose their "-seedN").
ROW_OF = {
    "test_faults_disk.py::test_search_disk_filling_mid_trial_keeps_the_study": "search-disk-fills-mid-trial",
    "test_faults_inputs.py::test_unreadable_images_are_skipped_with_a_warning_naming_each":
        "imagefolder-unreadable-files",
    "test_faults_inputs.py::test_bad_arch_for_train_is_one_line_error": "train-bad-arch",
    "test_faults_search.py::test_every_kill_leaves_a_sound_study_and_complete_files[reference]":
        "kill-during-reference",
    "test_faults_search.py::test_every_kill_leaves_a_sound_study_and_complete_files[ask]": "kill-while-asking",
    "test_faults_search.py::test_every_kill_leaves_a_sound_study_and_complete_files[mid-trial]": "kill-mid-trial",
    "test_faults_search.py::test_every_kill_leaves_a_sound_study_and_complete_files[after-record]":
        "kill-after-record",
    "test_faults_search.py::test_every_kill_leaves_a_sound_study_and_complete_files[random-start]":
        "kill-random-start",
    "test_faults_search.py::test_every_kill_leaves_a_sound_study_and_complete_files[random-trial]":
        "kill-random-trial",
    "test_faults_search.py::test_kill_during_reference_then_resume": "kill-during-reference",
    "test_faults_search.py::test_kill_while_a_candidate_is_asked_leaves_a_trial_that_resume_recovers":
        "kill-while-asking",
    "test_faults_search.py::test_kill_mid_trial_leaves_a_running_trial_that_resume_reruns": "kill-mid-trial",
    "test_faults_search.py::test_kill_right_after_a_trial_is_recorded_leaves_valid_files": "kill-after-record",
    "test_faults_search.py::test_resumed_study_has_exactly_the_budget_and_complete_files": "resume-to-budget",
    "test_faults_search_failures.py::test_candidates_over_the_time_limit_fail_with_reason_and_the_search_finishes":
        "candidate-timeout",
    "test_faults_search_failures.py::test_reference_over_the_time_limit_is_a_one_line_error": "reference-timeout",
    "test_faults_search_failures.py::test_diverging_candidates_are_recorded_failed_and_the_search_finishes":
        "candidate-diverges",
    "test_faults_train.py::test_kill_mid_run_leaves_only_loadable_checkpoints": "train-kill-mid-run",
    "test_faults_train.py::test_resume_after_kill_ends_with_the_same_weights": "train-resume-after-kill",
    "test_faults_trials.py::test_candidate_that_raises_inside_its_model_is_a_failed_trial": "candidate-raises",
    "test_faults_trials.py::test_candidate_over_the_memory_limit_is_a_failed_trial_and_the_worker_goes_on":
        "candidate-over-memory",
    "test_faults_trials.py::test_reference_over_the_memory_limit_is_a_one_line_error": "reference-over-memory",
    "test_faults_trials.py::test_bad_trial_memory_is_a_one_line_error[negative]": "trial-memory-negative",
    "test_faults_trials.py::test_bad_trial_memory_is_a_one_line_error[not-a-number]": "trial-memory-not-a-number",
    "test_faults_trials.py::test_bad_trial_memory_is_a_one_line_error[on-ray]": "trial-memory-on-ray",
}


def collected() -> list[str]:
    """Every test pytest collects from the fault modules, as ``module.py::test[id]`` (seeds stripped)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                             *sorted(str(p) for p in (ROOT / "tests").glob("test_faults_*.py"))],
                            capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    tests = [line.split("/", 1)[1] for line in result.stdout.splitlines() if line.startswith("tests/test_faults_")]
    return [re.sub(r"-seed\d+\]$", "]", test) for test in tests]


def documented() -> dict[str, set[str]]:
    """The page's rows: module file name -> case ids under its heading."""
    rows: dict[str, set[str]] = {}
    module = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"## (test_faults_\w+\.py) \(\d+\)$", line)
        if heading:
            module = heading.group(1)
            rows[module] = set()
        elif module and (case := re.match(r"\| `([^`]+)` \|", line)):
            rows[module].add(case.group(1))
    return rows


def test_every_fault_test_has_a_row_and_every_row_a_test():
    tests = collected()
    rows = documented()
    assert len(tests) > 50 and sum(len(cases) for cases in rows.values()) > 50
    claimed: dict[str, set[str]] = {module: set() for module in rows}
    missing = []
    for test in tests:
        if test in NOT_A_FAULT:
            continue
        module = test.split("::")[0]
        parameter = re.search(r"\[(.+)\]$", test)
        case = ROW_OF.get(test, parameter.group(1) if parameter else None)
        if case is None or case not in rows.get(module, set()):
            missing.append(f"{test} -> {case}")
        else:
            claimed[module].add(case)
    assert not missing, f"fault tests without a row in docs/faults.md (add the row to FAULTS, or map it in ROW_OF): " \
                        f"{missing}"
    untested = {module: sorted(cases - claimed[module]) for module, cases in rows.items() if cases - claimed[module]}
    assert not untested, f"rows of docs/faults.md that no collected test checks: {untested}"
    stale = sorted(set(ROW_OF) - {test for test in tests})
    assert not stale, f"ROW_OF names tests that no longer exist: {stale}"
