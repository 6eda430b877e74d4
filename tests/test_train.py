"""Training throughput (`--bench train`) on the CPU: the step itself, what a row records, out of
memory in backward, compile, and the flags training cannot honour."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch
from torch import nn

import suite.throughput as tp
from suite.settings import Settings
from suite.steps import TRAIN_CLIP_NORM, TrainStep
from suite.timing import HostClock
from tests import fakes
from tests.test_throughput import FAST

def without_latency(args: list[str]) -> list[str]:
    """FAST's flags but --latency-steps (a training run has no latency row to set)."""
    at = args.index("--latency-steps")
    return args[:at] + args[at + 2:]


TRAIN = [*without_latency(FAST), "--bench", "train"]
CPU = torch.device("cpu")


def grad_norm(params) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))


@pytest.mark.parametrize("precision, mode", [("fp32", "autocast"), ("bf16", "autocast"), ("bf16", "pure"),
                                             ("fp16", "autocast")])
def test_a_step_changes_every_trainable_parameter_and_clips_the_global_norm(precision, mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(30.0)  # large weights: large gradients, so the clip has work to do
    settings = Settings(device=CPU, precision=precision, precision_mode=mode)
    if mode == "pure":
        model = model.to(torch.bfloat16)
    x = torch.randn(4, 3, 8, 8, dtype=torch.bfloat16 if mode == "pure" else torch.float32)
    step = TrainStep(model, model, x, settings, num_classes=10)
    before = [p.detach().clone() for p in step.params]
    for _ in range(40):  # fp16: the GradScaler skips steps until its scale stops overflowing
        step.zero_grad()
        step()
        if all(not torch.equal(b, p.detach()) for b, p in zip(before, step.params)):
            break
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, step.params))
    if step.scaler is not None:
        assert step.skipped_steps >= 0
    if step.scaler is None:  # with a GradScaler the grads stay scaled on the parameters; its unscaled norm was clipped
        assert float(step.last_norm) > TRAIN_CLIP_NORM
        assert grad_norm(step.params) <= TRAIN_CLIP_NORM * (1 + 1e-2)
    step.zero_grad()
    assert all(p.grad is None for p in step.params)  # set_to_none


def test_zero_grad_runs_outside_the_timed_region():
    def slow_between() -> None:
        time.sleep(0.05)

    times = HostClock().run(lambda: None, 3, between=slow_between)
    assert max(times) < 0.01


def test_training_rows_carry_timms_train_columns_and_three_forwards_of_flops(tmp_path):
    out = tmp_path / "tp.csv"
    macs = 1_000_000_000
    assert tp.main(["--models", "test_vit", "--batch-sizes", "1,2", "--out", str(out), *TRAIN],
                   instruments=fakes.instruments(macs=macs)) == 0
    frame = pd.read_csv(out)
    assert list(frame["bench"]) == ["train", "train"]  # no latency row for a training run
    row = frame.iloc[1]
    assert row["status"] == "ok" and row["train_batch_size"] == 2 and row["train_img_size"] == 64
    assert row["train_samples_per_sec"] == pytest.approx(row["images_per_sec"], abs=0.01)
    assert row["model_flops_per_image"] == 3 * 2 * macs
    assert row["achieved_tflops"] == pytest.approx(3 * 2 * macs * row["images_per_sec"] / 1e12)
    assert "AdamW" in row["train_recipe"] and pd.isna(row["infer_samples_per_sec"])
    assert row["param_count"] == pytest.approx(row["params"] / 1e6, abs=0.01)


def test_out_of_memory_in_backward_is_recorded_and_the_run_goes_on(tmp_path):
    out = tmp_path / "tp.csv"
    settings = Settings.from_preset(CPU, "cpu", bench="train", batch_sizes=(1, 2, 4, 8), warmup_steps=1,
                                    min_steps=2, flat_patience=0, latency_steps=0, model_budget_s=0.0)
    specs = [fakes.oom_in_backward_spec(), *fakes.tiny_vit_specs(1)]
    tp.run(specs, settings, out, progress=False, in_process=True,
           instruments=fakes.instruments(fakes.ModelledClocks(), macs=10**6))
    frame = pd.read_csv(out)
    failing = frame[frame["model"] == "oom-in-backward"]
    assert list(failing["status"]) == ["ok", "ok", "oom"] and "in backward" in failing.iloc[2]["error"]
    assert list(frame[frame["model"] == "tiny-vit-0"]["status"]) == ["ok"] * 4


def test_grad_checkpointing_and_compile_are_recorded(tmp_path):
    out = tmp_path / "tp.csv"
    assert tp.main(["--models", "test_vit", "--batch-sizes", "2", "--out", str(out), *TRAIN, "--grad-checkpointing",
                    "--compile", "--compile-backend", "eager"], instruments=fakes.instruments()) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["status"] == "ok" and bool(row["grad_checkpointing"]) and bool(row["compile"])
    assert row["compile_graphs"] >= 1


def test_resume_tells_training_rows_from_inference_rows(tmp_path):
    out = tmp_path / "tp.csv"
    args = ["--models", "test_vit", "--batch-sizes", "1,2", "--out", str(out), *FAST, "--in-process"]
    tp.main(args, instruments=fakes.instruments())
    counting = fakes.CountingClocks()
    tp.main([*without_latency(args), "--bench", "train", "--resume"],
            instruments=fakes.instruments(counting))
    assert counting.measured == [("test_vit", "train", 1), ("test_vit", "train", 2)]


@pytest.mark.parametrize("argv, fragment", [
    (["--bench", "fly"], "invalid choice"),
    (["--grad-checkpointing"], "is for --bench train"),
    (["--bench", "train", "--cuda-graphs"], "cannot use --cuda-graphs"),
    (["--bench", "train", "--precision", "fp16", "--mode", "pure"], "needs --mode autocast"),
    (["--bench", "train", "--latency-steps", "3"], "no latency row"),
])
def test_flags_training_cannot_honour_exit_2(argv, fragment, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        tp.main([*argv, "--device", "cpu", "--out", str(tmp_path / "x.csv")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err
