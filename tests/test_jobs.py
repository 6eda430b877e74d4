"""Tests of suite.jobs: every model's sweep in its own child process, and what happens when one dies
(SIGKILL, a segfault, a fake sticky CUDA error, silence): a `crashed` row, then the next model."""

from __future__ import annotations

import pandas as pd
import pytest

import suite.throughput as tp
from suite.jobs import death_reason, last_error_line
from tests import fakes
from tests.test_throughput import FAST

ARGS = ["--models", "test_vit,test_resnet", "--batch-sizes", "1,2,4", *FAST]


def run(tmp_path, failures, *extra, **instrument_kwargs):
    out = tmp_path / "tp.csv"
    clocks = fakes.ModelledClocks(failures=failures)
    code = tp.main([*ARGS, "--out", str(out), *extra], instruments=fakes.instruments(clocks, **instrument_kwargs))
    return code, pd.read_csv(out)


def test_a_child_killed_mid_sweep_is_a_crashed_row_and_the_next_model_is_measured(tmp_path, capsys):
    code, frame = run(tmp_path, ((("test_vit", "infer", 2), fakes.Failure("sigkill")),))
    assert code == 0
    vit = frame[frame["model"] == "test_vit"]
    assert list(vit["batch_size"]) == [1, 2] and list(vit["status"]) == ["ok", "crashed"]
    crashed = vit.iloc[1]
    assert crashed["error"] == "killed by SIGKILL" and crashed["sweep_stop"] == "crashed"
    assert crashed["device"] == "cpu" and crashed["torch_version"]  # the environment the child reported
    assert list(frame[frame["model"] == "test_resnet"]["status"]) == ["ok", "ok", "ok"]
    assert "test_vit: crashed (killed by SIGKILL)" in capsys.readouterr().err


def test_a_sticky_cuda_error_ends_only_its_own_child(tmp_path):
    code, frame = run(tmp_path, ((("test_vit", "infer", 1), fakes.STICKY),))
    assert code == 0
    vit = frame[frame["model"] == "test_vit"].iloc[0]
    assert vit["status"] == "crashed"
    assert vit["error"] == "sticky CUDA error: RuntimeError: CUDA error: an illegal memory access was encountered"
    assert list(frame[frame["model"] == "test_resnet"]["status"]) == ["ok", "ok", "ok"]


def test_a_segfault_names_its_fatal_error(tmp_path):
    code, frame = run(tmp_path, ((("test_vit", "infer", 4), fakes.Failure("segfault")),))
    vit = frame[frame["model"] == "test_vit"]
    assert list(vit["status"]) == ["ok", "ok", "crashed"]
    assert vit.iloc[2]["error"].startswith("killed by SIGSEGV: Fatal Python error: Segmentation fault")


def test_a_silent_child_is_killed_after_the_timeout(tmp_path):
    code, frame = run(tmp_path, ((("test_vit", "infer", 2), fakes.Failure("hang")),), "--child-timeout", "3")
    vit = frame[frame["model"] == "test_vit"]
    assert list(vit["status"]) == ["ok", "crashed"] and vit.iloc[1]["error"] == "no message for 3 s: killed"
    assert list(frame[frame["model"] == "test_resnet"]["status"]) == ["ok", "ok", "ok"]


def test_resume_keeps_crashed_rows_unless_asked_to_retry(tmp_path):
    out = tmp_path / "tp.csv"
    args = [*ARGS, "--out", str(out)]
    kill = fakes.ModelledClocks(failures=((("test_vit", "infer", 2), fakes.Failure("sigkill")),))
    tp.main(args, instruments=fakes.instruments(kill))
    tp.main([*args, "--resume"], instruments=fakes.instruments())
    assert len(pd.read_csv(out)) == 5  # the crashed row stands: nothing measured again
    tp.main([*args, "--resume", "--retry-crashed"], instruments=fakes.instruments())
    frame = pd.read_csv(out)
    vit = frame[frame["model"] == "test_vit"]
    assert list(vit["batch_size"]) == [1, 2, 2, 4] and list(vit["status"]) == ["ok", "crashed", "ok", "ok"]


def test_in_process_a_sticky_error_stops_the_run_and_says_how_to_go_on(tmp_path, capsys):
    code, frame = run(tmp_path, ((("test_vit", "infer", 2), fakes.STICKY),), "--in-process")
    assert code == 1
    assert list(frame["status"]) == ["ok", "crashed"]  # test_resnet cannot run on a dead context
    assert "--resume without --in-process" in capsys.readouterr().err


@pytest.mark.parametrize("exitcode, reason", [(-9, "killed by SIGKILL"), (-11, "killed by SIGSEGV"),
                                              (70, "sticky CUDA error"), (3, "exit code 3")])
def test_death_reasons(exitcode, reason):
    assert death_reason(exitcode) == reason


def test_the_last_error_line_prefers_the_error_over_the_stack():
    text = "warning: x\nFatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n" \
           '  File "a.py", line 3 in <module>\n'
    assert last_error_line(text) == "Fatal Python error: Segmentation fault"
    assert last_error_line("Traceback (most recent call last):\n  File x\nValueError: bad\n") == "ValueError: bad"
    assert last_error_line("") == ""
