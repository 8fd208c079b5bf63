"""The device a search's own process names without importing torch, and the memory it checks networks against."""

import os
import subprocess
import sys

import pytest

from effnas.models.memory import GPU_DEVICE_PATHS

NO_GPU_HERE = sys.platform.startswith("linux") and not any(os.path.exists(path) for path in GPU_DEVICE_PATHS)


def run_without_torch(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; its printed words, then whether torch got imported."""
    script = f"import sys\n{code}\nprint('torch' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


@pytest.mark.skipif(not NO_GPU_HERE, reason="a GPU driver is on this machine: auto must ask torch")
def test_auto_on_a_machine_without_a_gpu_is_the_cpu_told_without_torch():
    words = run_without_torch(
        "from effnas.models.memory import device_memory\n"
        "from effnas.nas.training.devices import device_name\n"
        "from effnas.nas.search.backends.local import default_workers\n"
        "import os\n"
        "print(device_memory('auto') == device_memory('cpu'), device_name('auto'),"
        " default_workers('auto') == max(1, min(8, os.cpu_count() or 1)))")
    assert words == ["True", "cpu", "True", "False"]


def test_a_gpu_driver_on_the_machine_sends_auto_to_torch(tmp_path):
    """Where a GPU driver's files are, torch is asked; it then names the device (here: its answer, whatever the
    machine has)."""
    driver = tmp_path / "nvidia0"
    driver.touch()
    words = run_without_torch(
        "import effnas.models.memory as memory\n"
        f"memory.GPU_DEVICE_PATHS = ({str(driver)!r},)\n"
        "from effnas.nas.training.devices import device_name\n"
        "print(memory.gpu_may_be_present(), device_name('auto'))")
    assert words[0] == "True" and words[1] in ("cpu", "cuda") and words[-1] == "True"


@pytest.mark.parametrize("value, threads", [("1", 1), (" 3 ", 3), ("0", None), ("-2", None), ("four", None),
                                            ("", None), (None, None)])
def test_the_threads_the_user_set_are_read_from_omp_num_threads(monkeypatch, value, threads):
    from effnas.models.memory import threads_set_by_user

    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert threads_set_by_user() == threads
