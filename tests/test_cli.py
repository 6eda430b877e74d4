"""The flag types every command line shares: clear refusals, never a traceback."""

from __future__ import annotations

import argparse

import pytest

from suite import cli


@pytest.mark.parametrize(
    ("parse", "good", "bad"),
    [
        (cli.positive_int, {"3": 3}, ["0", "-1", "2.5", "x", ""]),
        (cli.non_negative_int, {"0": 0, "7": 7}, ["-1", "1.5", "x"]),
        (cli.positive_float, {"0.5": 0.5, "1024": 1024.0}, ["0", "-2", "inf", "nan", "x"]),
        (cli.non_negative_float, {"0": 0.0, "2.5": 2.5}, ["-0.1", "inf", "nan", "x"]),
        (cli.positive_int_list, {"1,2,4": [1, 2, 4], "8": [8]}, ["0", "1,0", "a,b", ""]),
        (cli.non_negative_int_list, {"0,1,2": [0, 1, 2], "7": [7]}, ["-1", "0,-2", "a", ""]),
    ],
)
def test_number_flags(parse, good, bad) -> None:
    for text, value in good.items():
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            parse(text)


def test_a_bad_flag_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.ArgumentParser(prog="python -m suite.x")
    parser.add_argument("--n", type=cli.positive_int)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--n", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("python -m suite.x: error:") and "--help" in err


@pytest.mark.parametrize(("text", "message"), [("mps", "unsupported device"), ("tpu", "unknown device"), ("cuda:x", "unknown device"),
                                               ("gpu0", "unknown device")])
def test_bad_devices_are_refused(text: str, message: str) -> None:
    with pytest.raises(cli.UsageError, match=message):
        cli.resolve_device(text)


def test_auto_and_cpu_devices() -> None:
    import torch

    assert cli.resolve_device("cpu").type == "cpu"
    assert cli.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(cli.UsageError, match="no CUDA device"):
            cli.resolve_device("cuda")
