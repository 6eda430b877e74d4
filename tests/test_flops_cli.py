"""`python -m suite.flops`: rows, columns, re-runs and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite import flops
from suite.results import ENVIRONMENT_COLUMNS, SCHEMAS, read_results, read_table


def test_writes_schema_rows_and_reruns_replace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--models", "Mixer-S/32,vit_tiny_patch16_224", "--img-size", "224,256", "--out", str(tmp_path)]
    assert flops.main(argv) == 0
    frame = read_results(tmp_path / "flops.csv", required=SCHEMAS["flops"] + ENVIRONMENT_COLUMNS)
    assert len(frame) == 4
    mixer = frame[(frame["model"] == "Mixer-S/32") & (frame["img_size"] == 224)].iloc[0]
    assert mixer["family"] == "mlp" and mixer["mixer_rule"] == "native"
    assert round(mixer["params_no_head"] / 1e6) == 19
    assert mixer["macs"] == mixer["macs_closed_form"] == mixer["macs_flop_counter"]
    assert frame[frame["img_size"] == 256]["mixer_rule"].fillna("").tolist() == ["paper", ""]
    out = capsys.readouterr().out
    assert "Mixer-S/32" in out and "GMACs" in out and "wrote 4 row(s)" in out
    assert flops.main(argv[:2] + ["--out", str(tmp_path)]) == 0
    assert len(read_results(tmp_path / "flops.csv")) == 6  # appended, never rewritten
    assert len(read_table(tmp_path / "flops.csv", kind="flops")) == 4  # a count made again supersedes


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "Mixer-B/17"], "did you mean Mixer-B/16"),
        (["--models", "Mixer-S/32", "--img-size", "0"], "positive integers"),
        (["--models", "Mixer-S/32", "--mixer-rule", "wild"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        flops.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_unwritable_output_exits_2_before_counting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as info:
        flops.main(["--models", "Mixer-S/32", "--out", str(blocker / "flops.csv")])
    assert info.value.code == 2
    assert "cannot write" in capsys.readouterr().err


def test_a_model_that_fails_to_count_is_skipped_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    real = flops.count_row

    def fail_on_vit(spec, *args, **kwargs):
        if spec.family == "attention":
            raise AssertionError()  # no message at all
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(flops, "count_row", fail_on_vit)
    assert flops.main(["--models", "Mixer-S/32,vit_tiny_patch16_224", "--out", str(tmp_path)]) == 0
    assert "skipped vit_tiny_patch16_224 at 224: AssertionError" in capsys.readouterr().err
    assert read_results(tmp_path / "flops.csv")["model"].tolist() == ["Mixer-S/32"]
