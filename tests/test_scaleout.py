"""Scale-out on the CPU: workers per device pulling from one queue, a run killed at random moments
and resumed, Slurm through submitit's local executor (and a rendered sbatch script), torchrun."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

import suite.throughput as tp
from suite import results
from tests import fakes
from tests.test_throughput import FAST

ROOT = Path(__file__).parents[1]
MODELS = "test_vit,test_resnet,test_vit2,test_convnext"
KEY = ["model", "bench", "batch_size"]


def rows_of(path: Path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", results.ResultsWarning)
        return results.read_table(path)


def test_two_cpu_workers_give_the_same_rows_as_one(tmp_path: Path, capsys) -> None:
    args = ["--models", MODELS, "--batch-sizes", "1,2", *FAST, "--latency-steps", "2"]
    args = [a for a in args if a != "cpu" and a != "--device"]
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    assert tp.main([*args, "--device", "cpu", "--out", str(one)], instruments=fakes.instruments()) == 0
    assert tp.main([*args, "--devices", "cpu,cpu", "--out", str(two)], instruments=fakes.instruments()) == 0
    first, second = rows_of(one), rows_of(two)
    assert len(second) == len(first) == 4 * 3
    assert sorted(map(tuple, first[KEY].values.tolist())) == sorted(map(tuple, second[KEY].values.tolist()))
    assert set(second["status"]) == {"ok"} and not second.duplicated(KEY).any()
    out = capsys.readouterr().out
    assert "cpu, cpu fp32" in out and out.count("test_convnext") == 2  # one summary per run, every model in it
    assert tp.main([*args, "--devices", "cpu,cpu", "--out", str(two), "--resume"], instruments=fakes.instruments()) == 0
    assert len(rows_of(two)) == 12  # nothing measured twice


@pytest.mark.parametrize("argv, fragment", [
    (["--devices", "cuda:5"], "CUDA"),
    (["--devices", "tpu:0"], "device"),
    (["--devices", "cpu,", "--out", "x"], "give devices"),
    (["--devices", "all"], "no CUDA device"),
    (["--devices", "cpu,cpu", "--device", "cpu"], "not both"),
    (["--devices", "cpu,cpu", "--in-process"], "one device"),
])
def test_bad_devices_exit_2_with_one_line(argv, fragment, tmp_path, capsys) -> None:
    if "all" in argv and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exc:
        tp.main([*argv, "--out", str(tmp_path / "x.csv")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err


DRIVER = """
import sys
from tests import fakes
import suite.throughput as tp
raise SystemExit(tp.main(sys.argv[1:], instruments=fakes.instruments(fakes.SleepingClocks(0.03))))
"""


def test_a_run_killed_at_random_moments_is_completed_by_resume(tmp_path: Path) -> None:
    out = tmp_path / "throughput.csv"
    argv = ["--models", "test_vit,test_resnet,test_vit2", "--batch-sizes", "1,2,4,8", "--device", "cpu",
            "--img-size", "64", "--warmup", "1", "--repeats", "4", "--latency-steps", "3", "--flat-patience", "0",
            "--no-progress", "--in-process", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(1)
    counts = []
    for attempt in range(3):
        process = subprocess.Popen([sys.executable, "-c", DRIVER, *argv, *(["--resume"] if attempt else [])],
                                   env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5.5 + rng.random() * 2.0)
        process.send_signal(signal.SIGKILL)
        process.wait()
        counts.append(len(rows_of(out)) if out.exists() else 0)  # whatever was left is readable
    final = subprocess.run([sys.executable, "-c", DRIVER, *argv, "--resume"], env=env, cwd=ROOT,
                           capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-500:]
    assert any(0 < count < 15 for count in counts), counts  # at least one kill landed mid-run
    frame = rows_of(out)
    assert len(frame) == 3 * 5 and not frame.duplicated(KEY).any() and set(frame["status"]) == {"ok"}
