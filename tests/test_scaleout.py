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
    import torch

    assert set(second["threads"]) == {max(1, torch.get_num_threads() // 2)}  # the cores are split, not fought over
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
    for attempt in range(2):
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


# --------------------------------------------------------------------------------------------------
# Launchers (submitit)
# --------------------------------------------------------------------------------------------------

def test_job_argv_keeps_the_harness_flags_and_drops_the_launchers():
    from suite.launch import job_argv

    argv = ["--models", "all", "--launcher=slurm", "--slurm-partition", "gpu", "--precision", "bf16", "--no-wait",
            "--out", "results/x.csv", "--resume", "--slurm-time=30"]
    assert job_argv(argv, "ViT-B/16") == ["--precision", "bf16", "--out", "results/x.csv", "--models", "ViT-B/16",
                                          "--resume", "--part", "job-ViT-B/16"]


def test_local_jobs_one_failing_then_resumed(tmp_path: Path, monkeypatch, capsys) -> None:
    """Two jobs through submitit's local executor; one dies; --resume measures only what it left."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = tmp_path / "throughput.csv"
    args = ["--models", "test_vit,test_resnet", "--batch-sizes", "1,2", *FAST, "--in-process", "--launcher", "local",
            "--out", str(out)]
    dying = fakes.ModelledClocks(failures=((("test_resnet", "infer", 2), fakes.Failure("sigkill")),))
    assert tp.main(args, instruments=fakes.instruments(dying)) == 1
    captured = capsys.readouterr()
    assert "job failed: test_resnet" in captured.err and "1 of 2 job(s) ended well" in captured.out
    parts = [p.name for p in results.part_files(out)]
    assert parts == ["throughput.part-job-test_resnet.csv", "throughput.part-job-test_vit.csv"]
    first = rows_of(out)
    assert sorted(map(tuple, first[["model", "batch_size"]].values.tolist())) == [
        ("test_resnet", 1), ("test_vit", 1), ("test_vit", 2)]
    assert tp.main([*args, "--resume"], instruments=fakes.instruments()) == 0
    final = rows_of(out)
    assert len(final) == 4 and not final.duplicated(["model", "batch_size"]).any()
    assert set(final["status"]) == {"ok"}


def test_the_sbatch_script_of_a_fake_cluster(tmp_path: Path, monkeypatch) -> None:
    """A job array rendered for Slurm without Slurm (submitit's own mocked sbatch), then one of its
    jobs run here as Slurm would run it."""
    from submitit.core import submission
    from submitit.slurm.test_slurm import mocked_slurm

    out = tmp_path / "throughput.csv"
    argv = ["--models", "test_vit,test_resnet", "--batch-sizes", "1", *FAST, "--in-process", "--launcher", "slurm",
            "--slurm-partition", "h100", "--slurm-time", "45", "--slurm-gpus-per-job", "1",
            "--slurm-array-parallelism", "2", "--no-wait", "--out", str(out)]
    with mocked_slurm() as mock:
        mock.known_cmds.append("sbatch")  # a login node: sbatch is there (and mocked)
        assert tp.main(argv, instruments=fakes.instruments()) == 0
        folder = tmp_path / "jobs"
        script = next(folder.glob("*submission.sh")).read_text()
        lines = [line.strip() for line in script.splitlines() if line.startswith("#SBATCH")]
        assert "#SBATCH --array=0-1%2" in lines
        assert "#SBATCH --partition=h100" in lines and "#SBATCH --time=45" in lines
        assert "#SBATCH --gpus-per-node=1" in lines and "#SBATCH --ntasks-per-node=1" in lines
        assert any("--signal=USR2@" in line for line in lines)  # time to requeue before the limit
        job_id = mock.last_job
        with mock.job_context(f"{job_id}_0"):
            submission.process_job(folder)
    frame = rows_of(out)
    assert frame["model"].tolist() == ["test_vit"] and results.part_files(out)[0].name == "throughput.part-job-test_vit.csv"


@pytest.mark.parametrize("argv, fragment", [
    (["--slurm-partition", "gpu"], "goes with --launcher slurm"),
    (["--launcher", "slurm"], "sbatch is not on this machine"),
    (["--no-wait"], "goes with --launcher local or slurm"),
    (["--launcher", "local", "--part", "x"], "--part is for one job"),
    (["--launcher", "local", "--devices", "cpu,cpu"], "drop --devices"),
])
def test_bad_launcher_input_exits_2(argv, fragment, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        tp.main([*argv, "--out", str(tmp_path / "x.csv")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err


# --------------------------------------------------------------------------------------------------
# Few-shot: torchrun and --resume; flops and few-shot through the local launcher
# --------------------------------------------------------------------------------------------------

FEWSHOT = ["--models", "test_vit", "--weights", "random", "--datasets", "digits", "--shots", "1,5", "--seeds", "0,1",
           "--workers", "0", "--batch-size", "32", "--device", "cpu"]


def test_torchrun_features_and_rows_equal_a_single_process(tmp_path: Path) -> None:
    import torch

    from suite import features, fewshot

    single_cache, ranked_cache = tmp_path / "cache1", tmp_path / "cache2"
    assert fewshot.main([*FEWSHOT, "--cache-dir", str(single_cache), "--out", str(tmp_path / "one.csv")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ran = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "suite.fewshot", *FEWSHOT, "--cache-dir", str(ranked_cache),
                          "--out", str(tmp_path / "two.csv")], env=env, cwd=ROOT, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-800:]
    assert "features from 2 processes" in ran.stdout
    one, two = pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "two.csv")
    columns = ["dataset", "shots", "seed", "l2_rule", "l2", "accuracy", "n_train", "n_test"]
    pd.testing.assert_frame_equal(one[columns], two[columns])
    assert (two["world_size"] == 2).all() and (one["world_size"] == 1).all()
    for split in ("train", "test"):
        stores = sorted(single_cache.glob(f"*{split}*.pt")), sorted(ranked_cache.glob(f"*{split}*.pt"))
        assert [p.name for p in stores[0]] == [p.name for p in stores[1]]  # same key: same file name
        a, b = (torch.load(s[0], weights_only=True) for s in stores)
        assert a["indices"].tolist() == b["indices"].tolist() and len(set(b["indices"].tolist())) == len(b["indices"])
        torch.testing.assert_close(a["features"], b["features"], rtol=1e-5, atol=1e-5)
    assert features.Ranks(1, 2).slice(list(range(5))) == [3, 4] and features.Ranks(0, 2).slice([7]) == [7]
    assert features.Ranks(1, 2).slice([7]) == []


def test_fewshot_resume_skips_what_is_written(tmp_path: Path, capsys) -> None:
    from suite import fewshot

    out, cache = tmp_path / "fewshot.csv", tmp_path / "cache"
    args = [*FEWSHOT, "--cache-dir", str(cache), "--out", str(out)]
    assert fewshot.main(args) == 0
    first = pd.read_csv(out)
    assert len(first) == 2 * (1 + 2)  # seeds x (1-shot fixed, 5-shot fixed, 5-shot heldout)
    assert fewshot.main([*args, "--resume", "--seeds", "0,1,2"]) == 0
    final = pd.read_csv(out)
    assert len(final) == 3 * 3 and not final.duplicated(list(fewshot.RESUME_KEY)).any()
    assert "6 already there" in capsys.readouterr().out


def test_flops_through_the_local_launcher(tmp_path: Path, monkeypatch, capsys) -> None:
    from suite import flops

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = tmp_path / "flops.csv"
    assert flops.main(["--models", "test_vit,test_resnet", "--launcher", "local", "--no-cross-check",
                       "--out", str(out)]) == 0
    assert "2 of 2 job(s) ended well" in capsys.readouterr().out
    assert sorted(results.read_table(out, kind="flops")["model"]) == ["test_resnet", "test_vit"]
    assert [p.name for p in results.part_files(out)] == ["flops.part-job-test_resnet.csv", "flops.part-job-test_vit.csv"]
    assert flops.main(["--models", "test_vit,test_resnet", "--resume", "--out", str(out)]) == 0
    assert "nothing left to count" in capsys.readouterr().out


@pytest.mark.parametrize("module", ["suite.flops", "suite.fewshot", "suite.throughput"])
def test_every_harness_refuses_a_slurm_option_without_slurm(module, tmp_path, capsys) -> None:
    import importlib

    with pytest.raises(SystemExit) as exc:
        importlib.import_module(module).main(["--slurm-time", "5", "--out", str(tmp_path / "x.csv")])
    assert exc.value.code == 2 and "goes with --launcher slurm" in capsys.readouterr().err
