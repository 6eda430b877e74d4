"""The few-shot harness end to end: sampling, checkpoints, feature cache, rows, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from suite import features, fewshot
from suite.results import ENVIRONMENT_COLUMNS, SCHEMAS
from suite.zoo import build_model, get_spec
from tests.test_data import write_image_folder

TINY = "test_vit"


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------

def test_sampling_follows_the_reference_recipe_and_nests():
    labels = np.random.default_rng(7).integers(0, 4, size=200)
    permutations = fewshot.class_permutations(labels, 4, seed=3)
    rng = np.random.default_rng(3)
    expected = [rng.permutation(np.where(labels == c)[0]) for c in range(4)]
    for ours, theirs in zip(permutations, expected):
        np.testing.assert_array_equal(ours, theirs)
    one = fewshot.take_shots(permutations, 1)
    five = fewshot.take_shots(permutations, 5)
    for c in range(4):
        assert one[c][0] == five[c][0] and (labels[five[c]] == c).all() and len(set(five[c])) == 5


def test_seeds_reproduce_exactly_and_differ_between_seeds():
    labels = np.repeat(np.arange(5), 30)
    again = [fewshot.take_shots(fewshot.class_permutations(labels, 5, 0), 5) for _ in range(2)]
    other = fewshot.take_shots(fewshot.class_permutations(labels, 5, 1), 5)
    assert all((a == b).all() for a, b in zip(*again))
    assert any((a != b).any() for a, b in zip(again[0], other))


def test_unreadable_examples_are_passed_over():
    labels = np.zeros(10, dtype=int)
    permutations = fewshot.class_permutations(labels, 1, seed=0)
    first = int(permutations[0][0])
    shots = fewshot.take_shots(permutations, 3, skip={first})
    assert first not in shots[0] and list(shots[0]) == list(permutations[0][1:4])
    with pytest.raises(fewshot.DataError, match="only 9 readable"):
        fewshot.take_shots(permutations, 10, skip={first})


def test_heldout_size():
    assert [fewshot.heldout_size(k) for k in (1, 2, 5, 10, 25)] == [0, 1, 1, 2, 5]


# --------------------------------------------------------------------------------------------------
# End to end on a tiny model
# --------------------------------------------------------------------------------------------------

@pytest.fixture()
def folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images")


@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    """A test_vit with its own random weights and a 3-class head, saved as {'state_dict': ...}."""
    torch.manual_seed(123)
    model = build_model(get_spec(TINY), num_classes=3)
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


@pytest.fixture()
def forward_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = features.pre_logits

    def counting(model, images):
        calls.append(images.shape[0])
        return original(model, images)

    monkeypatch.setattr(features, "pre_logits", counting)
    return calls


def _run(*args: str) -> int:
    return fewshot.main(["--models", TINY, "--workers", "0", "--batch-size", "16", *args])


def test_end_to_end_with_checkpoint_and_cache(tmp_path, folder, checkpoint, forward_calls, capsys):
    out, cache = tmp_path / "fewshot.csv", tmp_path / "cache"
    common = ["--datasets", f"imagefolder:{folder}", "--weights", str(checkpoint), "--cache-dir", str(cache),
              "--out", str(out)]
    assert _run(*common, "--shots", "1,5", "--seeds", "0,1") == 0
    first_pass = sum(forward_calls)
    assert 9 + 3 * 5 <= first_pass <= 9 + 19  # all test images, then only the sampled train images
    rows = pd.read_csv(out)
    assert set(SCHEMAS["fewshot"]) | set(ENVIRONMENT_COLUMNS) <= set(rows.columns)
    assert len(rows) == 2 * (1 + 2)  # seeds x (1-shot fixed, 5-shot fixed, 5-shot heldout)
    assert set(rows["l2_rule"]) == {"fixed", "heldout"}
    assert (rows.loc[rows["l2_rule"] == "fixed", "l2"] == 1024).all()
    assert rows["weights"].str.startswith("file:tiny.pth@").all()
    assert (rows["feature_dim"] == 64).all() and (rows["n_test"] == 9).all() and (rows["n_classes"] == 3).all()
    assert rows["accuracy"].between(0, 1).all()
    assert "few-shot accuracy" in capsys.readouterr().out

    forward_calls.clear()
    assert _run(*common, "--shots", "2,3", "--seeds", "1") == 0
    assert forward_calls == []
    assert len(pd.read_csv(out)) == 6 + 2 + 2


def test_checkpoint_loads_backbone_exactly(checkpoint):
    spec = get_spec(TINY)
    loaded = features.load_model(spec, features.parse_weights(str(checkpoint)))
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    for name, tensor in loaded.state_dict().items():
        if not name.startswith("head."):
            torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    random = features.load_model(spec, features.parse_weights("random"))
    assert not torch.equal(random.state_dict()["blocks.0.attn.qkv.weight"], saved["blocks.0.attn.qkv.weight"])


def test_safetensors_checkpoint_loads_like_pth(tmp_path, checkpoint):
    from safetensors.torch import save_file

    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    a = features.load_model(get_spec(TINY), features.parse_weights(str(path)))
    b = features.load_model(get_spec(TINY), features.parse_weights(str(checkpoint)))
    images = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        torch.testing.assert_close(features.pre_logits(a, images), features.pre_logits(b, images))


def test_unreadable_images_are_skipped_and_counted(tmp_path, folder, capsys):
    out = tmp_path / "fewshot.csv"
    assert _run("--datasets", f"imagefolder:{folder}", "--weights", "random", "--cache-dir", str(tmp_path / "c"),
                "--out", str(out), "--shots", "6", "--seeds", "0,1,2", "--l2-rules", "fixed") == 0
    rows = pd.read_csv(out)
    assert (rows["unreadable_train"] == 1).all() and (rows["n_train"] == 18).all()
    assert "skipped unreadable images (train 1" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2
# --------------------------------------------------------------------------------------------------

def _one_line_exit_2(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as info:
        _run(*args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m suite.fewshot: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_exits_2_with_one_line(tmp_path, folder, capsys):
    base = ["--weights", "random", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o.csv")]
    assert "only 6 images" in _one_line_exit_2(capsys, *base, "--datasets", f"imagefolder:{folder}", "--shots", "7")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    assert "no images" in _one_line_exit_2(capsys, *base, "--datasets", f"imagefolder:{empty}")
    assert "unknown dataset" in _one_line_exit_2(capsys, *base, "--datasets", "mnist-ish")
    missing = ["--datasets", "digits", "--weights", str(tmp_path / "nope.pth")]
    assert "not found" in _one_line_exit_2(capsys, *missing)
    assert "unknown model" in _one_line_exit_2(capsys, *base[:2], "--models", "Mixer-Q/99", "--datasets", "digits")
    assert "--shots" in _one_line_exit_2(capsys, *base, "--shots", "0")
    assert not (tmp_path / "o.csv").exists()


def test_unwritable_output_exits_2_before_any_feature_is_computed(tmp_path, folder, capsys, monkeypatch):
    def no_forward(*args, **kwargs):
        raise AssertionError("features were computed before the output was checked")

    monkeypatch.setattr(features, "extract", no_forward)
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = _one_line_exit_2(capsys, "--datasets", f"imagefolder:{folder}", "--weights", "random", "--shots", "2",
                           "--cache-dir", str(tmp_path / "c"), "--out", str(blocker / "fewshot.csv"))
    assert "cannot write" in err


def test_checkpoint_of_another_model_is_refused(tmp_path, folder, capsys):
    path = tmp_path / "other.pth"
    torch.save(build_model(get_spec("test_resnet")).state_dict(), path)
    err = _one_line_exit_2(capsys, "--datasets", f"imagefolder:{folder}", "--weights", str(path),
                           "--shots", "2", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o.csv"))
    assert "does not fit test_vit" in err


def test_unreachable_hub_names_the_alternatives(tmp_path, folder, capsys, monkeypatch):
    def offline_build(spec, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return build_model(spec, **kwargs)

    monkeypatch.setattr(features, "build_model", offline_build)
    monkeypatch.setattr(features, "data_config", lambda spec, weights: {"input_size": (3, 160, 160)})
    err = _one_line_exit_2(capsys, "--datasets", f"imagefolder:{folder}", "--weights", "pretrained",
                           "--models", "test_vit.r160_in1k", "--shots", "2", "--cache-dir", str(tmp_path / "c"),
                           "--out", str(tmp_path / "o.csv"))
    assert "--weights random" in err and "--weights PATH" in err


def test_default_models_are_the_lineup_with_pretrained_tags():
    specs = fewshot.default_models()
    assert specs and all(s.pretrained_tag for s in specs)
    assert "Mixer-B/16" in [s.name for s in specs] and "Mixer-H/14" not in [s.name for s in specs]


def test_changed_checkpoint_is_not_served_from_the_cache(tmp_path, folder, checkpoint, forward_calls):
    common = ["--datasets", f"imagefolder:{folder}", "--weights", str(checkpoint), "--shots", "2", "--seeds", "0",
              "--l2-rules", "fixed", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o.csv")]
    assert _run(*common) == 0
    forward_calls.clear()
    state = torch.load(checkpoint, weights_only=True)
    state["state_dict"]["blocks.0.attn.qkv.weight"] += 1.0
    torch.save(state, checkpoint)
    assert _run(*common) == 0
    assert sum(forward_calls) >= 9
    assert pd.read_csv(tmp_path / "o.csv")["weights_sha256"].nunique() == 2


def test_features_are_extracted_in_exact_fp32(tmp_path, folder, checkpoint, monkeypatch):
    """Inside the forward passes: TF32 off for matmul and cuDNN convolution (whose default is on),
    cuDNN's autotuner off, whatever the user had set; everything put back afterwards."""
    from suite.timing import tf32_state

    seen = []
    original = features.pre_logits

    def recording(model, images):
        seen.append((tf32_state(), torch.backends.cudnn.benchmark))
        return original(model, images)

    monkeypatch.setattr(features, "pre_logits", recording)
    weights = features.parse_weights(str(checkpoint))
    model = features.load_model(get_spec(TINY), weights)
    images = fewshot.load_dataset(f"imagefolder:{folder}", str(tmp_path)).test
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.benchmark = True
    try:
        before = tf32_state()
        features.extract(model, images, range(3), features.data_config(get_spec(TINY), weights), batch_size=2)
        after, benchmark = tf32_state(), torch.backends.cudnn.benchmark
    finally:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.benchmark = False
    assert seen == [({"matmul": "ieee", "cudnn_conv": "ieee"}, False)] * 2
    assert after == before == {"matmul": "tf32", "cudnn_conv": "tf32"} and benchmark is True


def test_exact_fp32_is_set_and_restored_on_any_device():
    from suite.timing import tf32_state

    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.benchmark = True
    try:
        before = tf32_state()
        with features.exact_fp32(torch.device("cuda")):
            assert tf32_state() == {"matmul": "ieee", "cudnn_conv": "ieee"}
            assert torch.backends.cudnn.benchmark is False
        assert tf32_state() == before and torch.backends.cudnn.benchmark is True
    finally:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.benchmark = False


def test_features_of_another_device_are_not_served_from_the_cache(tmp_path, folder, checkpoint, forward_calls,
                                                                  monkeypatch):
    common = ["--datasets", f"imagefolder:{folder}", "--weights", str(checkpoint), "--shots", "2", "--seeds", "0",
              "--l2-rules", "fixed", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o.csv")]
    assert _run(*common) == 0
    forward_calls.clear()
    assert _run(*common) == 0
    assert forward_calls == []  # same device, same everything: served from the cache
    key = features.extraction_key("cpu")
    assert {"device", "device_name", "precision", "tf32", "torch", "timm", "cudnn"} <= set(key)
    monkeypatch.setattr(features, "extraction_key", lambda device: {**key, "device": "cuda",
                                                                     "device_name": "NVIDIA H100 80GB HBM3"})
    assert _run(*common) == 0
    assert sum(forward_calls) >= 9  # another device's features are computed, never mixed in
