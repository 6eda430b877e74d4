"""Result files: locked appends that no number of writers can lose, torn lines dropped and mended,
foreign headers refused, part files read as one table, resume keys, clear errors."""

from __future__ import annotations

import multiprocessing
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

from suite import merge, results

ROOT = Path(__file__).parents[1]


def fewshot_row(i: int, **extra: object) -> dict:
    return {"model": f"m{i}", "dataset": "digits", "shots": 5, "seed": i, "accuracy": 0.5, "l2_rule": "fixed",
            **extra}


def test_append_writes_the_full_schema_and_blanks_what_a_row_lacks(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "fewshot.csv"
    results.append_rows(path, [fewshot_row(0)], "fewshot")
    results.append_rows(path, [fewshot_row(1, heldout_accuracy=0.75)], "fewshot")
    frame = results.read_results(path)
    assert list(frame.columns) == list(results.COLUMNS["fewshot"])
    assert frame["model"].tolist() == ["m0", "m1"]
    assert pd.isna(frame.loc[0, "heldout_accuracy"]) and frame.loc[1, "heldout_accuracy"] == 0.75
    with pytest.raises(ValueError, match="columns the schema does not have: surprise"):
        results.append_rows(path, [fewshot_row(2, surprise=1)], "fewshot")


def test_a_value_never_breaks_a_row_across_lines(tmp_path: Path) -> None:
    path = tmp_path / "throughput.csv"
    results.append_rows(path, [{"model": "a", "status": "error", "error": "RuntimeError: one\ntwo"}], "throughput")
    assert len(path.read_text().splitlines()) == 2
    assert results.read_results(path).loc[0, "error"] == "RuntimeError: one two"


def test_written_files_get_the_usual_mode(tmp_path: Path) -> None:
    path = tmp_path / "fewshot.csv"
    results.append_rows(path, [fewshot_row(0)], "fewshot")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_file_with_another_header_is_refused_never_merged_into(tmp_path: Path) -> None:
    path = tmp_path / "throughput.csv"
    path.write_text("name,score\nfoo,1\n")
    with pytest.raises(results.ResultsError, match="not the suite.s throughput schema.*suite.merge"):
        results.append_rows(path, [{"model": "a"}], "throughput")
    assert path.read_text() == "name,score\nfoo,1\n"


def test_an_unfinished_last_line_is_dropped_with_a_warning_and_mended_by_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "fewshot.csv"
    results.append_rows(path, [fewshot_row(0), fewshot_row(1)], "fewshot")
    with open(path, "a") as handle:
        handle.write("m2,,,,wei")  # a writer killed mid-row
    with pytest.warns(results.ResultsWarning, match="fewshot.csv: dropped an unfinished last line"):
        assert results.read_results(path)["model"].tolist() == ["m0", "m1"]
    results.append_rows(path, [fewshot_row(3)], "fewshot")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert results.read_results(path)["model"].tolist() == ["m0", "m1", "m3"]


def test_a_torn_header_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "fewshot.csv"
    path.write_text("model,fam")
    results.append_rows(path, [fewshot_row(0)], "fewshot")
    assert results.read_results(path)["model"].tolist() == ["m0"]


def test_flops_counted_again_supersede_when_read(tmp_path: Path) -> None:
    path = tmp_path / "flops.csv"
    row = {"model": "a", "img_size": 224, "mixer_rule": "native", "num_classes": 1000}
    results.append_rows(path, [{**row, "macs": 1}, {**row, "img_size": 448, "macs": 2}], "flops")
    results.append_rows(path, [{**row, "macs": 3}], "flops")
    frame = results.read_table(path, kind="flops")
    assert sorted(zip(frame["img_size"], frame["macs"])) == [(224, 3), (448, 2)]
    assert len(results.read_table(path)) == 3  # other readers see every row


def _append_many(path: str, writer: int, count: int) -> None:
    for i in range(count):
        results.append_rows(path, [fewshot_row(writer * 1000 + i, weights=f"writer-{writer}")], "fewshot")


def test_many_writers_keep_every_row_exactly_once(tmp_path: Path) -> None:
    """Four processes appending 100 rows each to one file (the old rewrite-and-rename kept 151 of 400)."""
    path = tmp_path / "fewshot.csv"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(str(path), w, 100)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join()
        assert process.exitcode == 0
    frame = results.read_results(path)
    assert len(frame) == 400 and frame["model"].is_unique
    assert sorted(frame["model"]) == sorted(f"m{w * 1000 + i}" for w in range(4) for i in range(100))


WRITER = """
import sys
from suite import results
path, start = sys.argv[1], int(sys.argv[2])
long = "x" * 20000  # a wide row: a kill can land inside its write
for i in range(start, 100000):
    results.append_rows(path, [{"model": f"m{i}", "dataset": "d", "shots": 1, "seed": i, "accuracy": 0.5,
                                "l2_grid": long}], "fewshot")
"""


def test_a_writer_killed_at_random_moments_never_leaves_a_file_readers_refuse(tmp_path: Path) -> None:
    path = tmp_path / "fewshot.csv"
    rng = random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    written: set[str] = set()
    for _ in range(6):
        start = len(written)
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)], env=env)
        time.sleep(0.8 + rng.random() * 0.8)
        process.send_signal(signal.SIGKILL)
        process.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", results.ResultsWarning)
            frame = results.read_results(path)  # never refused
        assert frame["model"].is_unique
        written = set(frame["model"])
        assert written == {f"m{i}" for i in range(len(written))}  # every complete row, in order
    assert len(written) > 6  # the writer got far enough, each time, for the kills to land mid-run
    results.append_rows(path, [fewshot_row(99999)], "fewshot")  # the next append mends the file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(results.read_results(path)) == len(written) + 1


def test_part_files_are_read_with_the_main_file_as_one_table(tmp_path: Path, capsys) -> None:
    main = tmp_path / "fewshot.csv"
    results.append_rows(main, [fewshot_row(0)], "fewshot")
    results.append_rows(results.part_path(main, "job 1/a"), [fewshot_row(1), fewshot_row(2)], "fewshot")
    results.append_rows(results.part_path(main, "job2"), [fewshot_row(3), fewshot_row(0)], "fewshot")
    assert results.part_path(main, "job 1/a").name == "fewshot.part-job_1_a.csv"
    assert [p.name for p in results.part_files(main)] == ["fewshot.part-job2.csv", "fewshot.part-job_1_a.csv"]
    table = results.read_table(main)
    assert sorted(table["model"]) == ["m0", "m1", "m2", "m3"]  # m0 twice, identical: once
    assert merge.main([str(main)]) == 0
    assert "4 row(s), 2 part file(s) folded in" in capsys.readouterr().out
    assert results.part_files(main) == [] and sorted(results.read_results(main)["model"]) == ["m0", "m1", "m2", "m3"]


def test_merge_converts_an_older_suite_file_and_refuses_a_foreign_one(tmp_path: Path, capsys) -> None:
    old = tmp_path / "fewshot.csv"
    old.write_text("accuracy,model,shots\n0.5,a,5\n")  # an older column order, fewer columns
    assert merge.main([str(old)]) == 0
    results.append_rows(old, [fewshot_row(1)], "fewshot")  # accepted now
    assert results.read_results(old)["model"].tolist() == ["a", "m1"]
    foreign = tmp_path / "other.csv"
    foreign.write_text("name,score\nfoo,1\n")
    with pytest.raises(SystemExit) as exc:
        merge.main([str(foreign), "--kind", "fewshot"])
    assert exc.value.code == 2 and "does not know" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        merge.main([str(tmp_path / "mystery.csv")])
    assert "cannot tell which harness" in capsys.readouterr().err


def test_done_rows_keys_normalise_numbers(tmp_path: Path) -> None:
    path = tmp_path / "throughput.csv"
    results.append_rows(path, [{"model": "a", "batch_size": 8, "tf32": True},
                               {"model": "b", "batch_size": 16.0, "tf32": False}], "throughput")
    keys = results.done_rows(path, ("model", "batch_size", "tf32"))
    assert results.row_key({"model": "a", "batch_size": 8, "tf32": True}, ("model", "batch_size", "tf32")) in keys
    assert results.row_key({"model": "b", "batch_size": "16", "tf32": False}, ("model", "batch_size", "tf32")) in keys
    assert results.row_key({"model": "b", "batch_size": 32, "tf32": False}, ("model", "batch_size", "tf32")) not in keys
    assert results.done_rows(tmp_path / "missing.csv", ("model",)) == {}


def test_done_rows_can_keep_only_some_statuses_and_read_the_parts(tmp_path: Path) -> None:
    path = tmp_path / "throughput.csv"
    results.append_rows(path, [{"model": "a", "status": "ok"}, {"model": "b", "status": "error"}], "throughput")
    results.append_rows(results.part_path(path, "j"), [{"model": "c", "status": "oom"}], "throughput")
    done = results.done_rows(path, ("model",), statuses=("ok", "oom"))
    assert sorted(done) == [("a",), ("c",)] and done[("c",)]["status"] == "oom"
    assert results.done_rows(path, ("model", "absent"), statuses=("ok",)) == {}


def test_malformed_files_are_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('model,x\n"a,1\n')
    with pytest.raises(results.ResultsError, match="bad.csv"):
        results.read_results(path)
    good = tmp_path / "good.csv"
    good.write_text("model,x\na,1\n")
    with pytest.raises(results.ResultsError, match="missing column.*macs"):
        results.read_results(good, required=("model", "macs"))
    with pytest.raises(results.ResultsError, match="no such"):
        results.read_results(tmp_path / "nope.csv")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(results.ResultsError, match="folder.csv: is a folder"):
        results.read_results(tmp_path / "folder.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(results.ResultsError, match="binary.csv: not a readable CSV"):
        results.read_results(binary)


def test_unwritable_destination_is_refused_early(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(results.ResultsError, match="cannot write"):
        results.ensure_writable(blocker / "r.csv")


def test_environment_records_what_is_needed_to_repeat() -> None:
    env = results.environment("cpu")
    assert set(results.ENVIRONMENT_COLUMNS) <= set(env)
    assert env["device"] == "cpu" and env["torch_version"] and env["timm_version"]
    assert env["suite_commit"]


def test_a_one_line_foreign_file_is_refused_not_mended(tmp_path: Path) -> None:
    path = tmp_path / "fewshot.csv"
    path.write_bytes(b"someone else's notes, no newline")
    with pytest.raises(results.ResultsError, match="not a results file of this suite"):
        results.append_rows(path, [fewshot_row(0)], "fewshot")
    assert path.read_bytes() == b"someone else's notes, no newline"
