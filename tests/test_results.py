"""Result files: atomic appends, merged columns, replace-by-key, resume keys, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from suite import results


def test_append_creates_then_merges_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.csv"
    results.append_rows(path, [{"model": "a", "x": 1}])
    results.append_rows(path, [{"model": "b", "x": 2, "y": "new"}])
    frame = results.read_results(path)
    assert list(frame.columns) == ["model", "x", "y"]
    assert frame["model"].tolist() == ["a", "b"]
    assert pd.isna(frame.loc[0, "y"]) and frame.loc[1, "y"] == "new"


def test_written_files_get_the_usual_mode(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    results.append_rows(path, [{"model": "a"}])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)
    results.append_rows(path, [{"model": "b"}])
    assert path.stat().st_mode & 0o777 == 0o640


def test_replace_keys_supersedes_old_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    results.append_rows(path, [{"model": "a", "img_size": 224, "v": 1}, {"model": "a", "img_size": 448, "v": 2}])
    results.append_rows(path, [{"model": "a", "img_size": 224, "v": 3}], replace_keys=("model", "img_size"))
    frame = results.read_results(path)
    assert sorted(zip(frame["img_size"], frame["v"])) == [(224, 3), (448, 2)]


def test_a_failed_write_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.csv"
    results.append_rows(path, [{"model": "a"}])
    before = path.read_text()

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        results.append_rows(path, [{"model": "b"}])
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_done_rows_keys_normalise_numbers(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    results.append_rows(path, [{"model": "a", "batch": 8, "tf32": True}, {"model": "b", "batch": 16.0, "tf32": False}])
    keys = results.done_rows(path, ("model", "batch", "tf32"))
    assert results.row_key({"model": "a", "batch": 8, "tf32": True}, ("model", "batch", "tf32")) in keys
    assert results.row_key({"model": "b", "batch": "16", "tf32": False}, ("model", "batch", "tf32")) in keys
    assert results.row_key({"model": "b", "batch": 32, "tf32": False}, ("model", "batch", "tf32")) not in keys
    assert results.done_rows(tmp_path / "missing.csv", ("model",)) == {}


def test_done_rows_can_keep_only_some_statuses(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    results.append_rows(path, [{"model": "a", "status": "ok"}, {"model": "b", "status": "error"},
                               {"model": "c", "status": "oom"}])
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


def test_append_rewrites_old_rows_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    results.append_rows(path, [{"model": "a", "block": 1, "x": 0.5}, {"model": "b", "block": "", "x": 2}])
    results.append_rows(path, [{"model": "c", "block": 3, "x": 1e-7}])
    assert path.read_text().splitlines() == ["model,block,x", "a,1,0.5", "b,,2.0", "c,3,1e-07"]
