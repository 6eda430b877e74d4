"""python -m suite.inspect end to end: checkpoints with planted structure (a token-mixing unit that is a bump
at a known token and its inverse, blocks whose units look at one token or at all, a patch-embedding unit that
is an oriented grating, position embeddings of known similarity) come out as those pictures, pixel for pixel;
weights load through the few-shot harness's path; the report shows the pictures with their checkpoint; bad
input gets one line and exit code 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

from suite import features, inspect, learned, report
from suite.report_learned import read_manifest
from suite.zoo import build_conv_stem_mixer, build_model, get_spec
from tests.test_learned import bump, grating

MIXER, GRID, BUMP_AT, BUMP_UNIT, INVERSE_UNIT, GRATING_UNIT = "Mixer-S/32", 7, (2, 4), 5, 9, 3


def planted_bump() -> np.ndarray:
    return bump(GRID, GRID, BUMP_AT, sigma=0.7)


def planted_grating() -> np.ndarray:
    """(32, 32, 3): a grating at 30° in red, half as strong in green, inverted in blue."""
    g = grating(32, 2, np.pi / 6)
    return np.stack([g, 0.5 * g, -g], axis=-1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """A Mixer-S/32 checkpoint: block 1 holds a bump and its inverse, every unit of block 2 looks at one token,
    every unit of block 3 at all tokens equally, patch-embedding unit 3 is a grating; the rest is random."""
    torch.manual_seed(7)
    state = build_model(get_spec(MIXER)).state_dict()
    first = state["blocks.0.mlp_tokens.fc1.weight"]
    first[BUMP_UNIT] = torch.from_numpy(planted_bump().ravel())
    first[INVERSE_UNIT] = -first[BUMP_UNIT]
    second = state["blocks.1.mlp_tokens.fc1.weight"]
    second.zero_()
    second[torch.arange(len(second)), torch.arange(len(second)) % GRID ** 2] = 0.3
    state["blocks.2.mlp_tokens.fc1.weight"].fill_(0.02)
    state["stem.proj.weight"][GRATING_UNIT] = torch.from_numpy(planted_grating().transpose(2, 0, 1).copy())
    path = tmp_path_factory.mktemp("checkpoints") / "planted.pth"
    torch.save({"model": state}, path)
    return path


@pytest.fixture(scope="module")
def run(planted, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("inspect")
    assert inspect.main(["--models", MIXER, "--weights", str(planted), "--out", str(out), "--no-progress"]) == 0
    return out, pd.read_csv(out / "inspect.csv")


def picture(out: Path, row: pd.Series) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The PNG's pixels at one pixel per weight, and the model's arrays."""
    png = matplotlib.image.imread(out / row["file"])[..., :3]
    scale = int(row["scale"])
    return png[::scale, ::scale], dict(np.load(out / row["arrays"]))


def one_row(manifest: pd.DataFrame, kind: str, block: int | None = None) -> pd.Series:
    rows = manifest[(manifest["kind"] == kind) & ((manifest["block"] == block) if block else True)]
    assert len(rows) == 1
    return rows.iloc[0]


# --------------------------------------------------------------------------------------------------
# Planted structure comes out as that picture
# --------------------------------------------------------------------------------------------------

def test_a_bump_unit_is_drawn_as_that_bump_beside_its_inverse(run):
    out, manifest = run
    row = one_row(manifest, "token-mixing", 1)
    pixels, arrays = picture(out, row)
    order, columns = arrays["token-mixing-block1/order"], int(arrays["token-mixing-block1/columns"])
    position = int(np.flatnonzero(order == BUMP_UNIT)[0])
    assert order[position ^ 1] == INVERSE_UNIT  # the pair shares a slot pair (0, 1), (2, 3), ...
    assert arrays["token-mixing-block1/partner_cosine"][position] == pytest.approx(-1.0)
    shape = (GRID, GRID)
    expected = inspect.colourise(planted_bump() / planted_bump().max(), inspect.SIGNED_CMAP, -1, 1)
    np.testing.assert_allclose(learned.tile_at(pixels, position, shape, columns), expected, atol=0.6 / 255)
    np.testing.assert_allclose(learned.tile_at(pixels, position ^ 1, shape, columns),
                               inspect.colourise(-planted_bump() / planted_bump().max(), inspect.SIGNED_CMAP, -1, 1),
                               atol=0.6 / 255)
    np.testing.assert_allclose(arrays["token-mixing-block1/centre"][BUMP_UNIT], BUMP_AT, atol=1e-3)
    assert arrays["token-mixing-block1/spread"][BUMP_UNIT] < 1.0


def test_locality_reads_zero_for_one_token_units_uniform_for_equal_weights(run):
    _, manifest = run
    depth = manifest[manifest["kind"] == "locality"].set_index("block")["locality"]
    uniform = learned.uniform_spread(GRID, GRID)
    assert list(depth.index) == list(range(1, 9))
    assert depth[2] == pytest.approx(0.0, abs=1e-9)
    assert depth[3] == pytest.approx(uniform)
    # Random (untrained) units spread their mass like uniform weights.
    assert all(abs(depth[b] / uniform - 1) < 0.03 for b in (1, 4, 5, 6, 7, 8))
    for block in (1, 2, 3):
        assert one_row(manifest, "token-mixing", block)["locality"] == pytest.approx(depth[block])
    assert manifest["locality_uniform"].dropna().tolist() == pytest.approx([uniform] * 11)


def test_a_grating_filter_is_drawn_as_that_grating(run, planted):
    out, manifest = run
    row = one_row(manifest, "patch-embedding")
    assert row["layer"] == "stem.proj" and row["units"] == 512 and row["tile"] == "32×32×3"
    pixels, arrays = picture(out, row)
    order, columns = arrays["patch-embedding/order"], int(arrays["patch-embedding/columns"])
    position = int(np.flatnonzero(order == GRATING_UNIT)[0])
    grating_rgb = planted_grating()
    expected = 0.5 + 0.5 * grating_rgb / np.abs(grating_rgb).max()
    np.testing.assert_allclose(learned.tile_at(pixels, position, (32, 32), columns), expected, atol=0.6 / 255)
    saved = torch.load(planted, weights_only=True)["model"]["stem.proj.weight"].numpy()
    np.testing.assert_array_equal(arrays["patch-embedding/filters"], saved.transpose(0, 2, 3, 1))


def test_every_picture_has_its_files_and_the_manifest_names_the_checkpoint(run, planted):
    out, manifest = run
    sha = features.file_sha256(planted)
    assert set(manifest["weights"]) == {f"file:planted.pth@{sha[:12]}"} and set(manifest["weights_sha256"]) == {sha}
    assert manifest["kind"].value_counts().to_dict() == {"token-mixing": 3, "patch-embedding": 1, "locality": 8}
    for file in manifest["file"].unique():
        for suffix in (".png", ".pdf", ".svg"):
            assert (out / file).with_suffix(suffix).is_file()
    assert (out / manifest["arrays"].iloc[0]).is_file()
    assert manifest["suite_commit"].notna().all() and manifest["date"].notna().all()
    assert not list(out.rglob("*.tmp"))


def test_vit_pictures_come_out_as_planted_through_the_fewshot_loading_path(tmp_path):
    assert inspect.load_model is features.load_model and inspect.parse_weights is features.parse_weights
    torch.manual_seed(3)
    model = build_model(get_spec("test_vit"))
    rows, cols = model.patch_embed.grid_size
    with torch.no_grad():
        model.pos_embed.zero_()
        for t in range(rows * cols):
            model.pos_embed[0, 1 + t, t // cols] = 1.0
            model.pos_embed[0, 1 + t, rows + t % cols] = 1.0
    checkpoint = tmp_path / "vit.pth"
    torch.save(model.state_dict(), checkpoint)
    assert inspect.main(["--models", "test_vit", "--weights", str(checkpoint), "--out", str(tmp_path / "o"),
                         "--no-progress"]) == 0
    manifest = pd.read_csv(tmp_path / "o" / "inspect.csv")
    assert sorted(manifest["kind"]) == ["patch-embedding", "position-embedding"]
    pixels, arrays = picture(tmp_path / "o", one_row(manifest, "position-embedding"))
    r, c = np.indices((rows, cols))
    similarity = ((r == 2).astype(float) + (c == 7)) / 2
    tile = learned.tile_at(pixels, 2 * cols + 7, (rows, cols), cols)
    np.testing.assert_allclose(tile, inspect.colourise(similarity, inspect.SIMILARITY_CMAP, -1, 1), atol=0.6 / 255)
    loaded = features.load_model(get_spec("test_vit"), features.parse_weights(str(checkpoint)))
    np.testing.assert_array_equal(arrays["patch-embedding/filters"],
                                  loaded.patch_embed.proj.weight.detach().numpy().transpose(0, 2, 3, 1))


def test_random_weights_are_the_fewshot_harness_seeded_init_and_a_rerun_supersedes(tmp_path):
    out = tmp_path / "o"
    for models in ("test_resnet", "test_vit", "test_resnet"):
        assert inspect.main(["--models", models, "--weights", "random", "--out", str(out), "--no-progress"]) == 0
    raw = pd.read_csv(out / "inspect.csv")
    assert (raw["kind"] == "first-conv").sum() == 2
    current = read_manifest(out / "inspect.csv")
    assert sorted(current["kind"]) == ["first-conv", "patch-embedding", "position-embedding"]
    assert current.loc[current["kind"] == "first-conv", "date"].iloc[0] == raw["date"].iloc[-1]
    _, arrays = picture(out, current[current["kind"] == "first-conv"].iloc[0])
    seeded = features.load_model(get_spec("test_resnet"), features.parse_weights("random"))
    np.testing.assert_array_equal(arrays["first-conv/filters"],
                                  seeded.conv1[0].weight.detach().numpy().transpose(0, 2, 3, 1))


# --------------------------------------------------------------------------------------------------
# What each architecture gets, and what it lacks
# --------------------------------------------------------------------------------------------------

def test_each_architecture_gets_its_pictures_and_hybrids_say_what_is_skipped():
    with torch.device("meta"):
        stem_mixer = build_conv_stem_mixer(stem_layers=(1, 1, 1), stride=16, num_blocks=2, embed_dim=32,
                                           token_dim=16, channel_dim=32, img_size=64)
    kinds, skipped = inspect.plan(stem_mixer, None)
    assert kinds == ["token-mixing", "first-conv"] and list(skipped) == ["patch-embedding"]
    assert "stem.backbone.stem.conv" in skipped["patch-embedding"] and "shown instead" in skipped["patch-embedding"]
    kinds, skipped = inspect.plan(build_model(get_spec("R50+ViT-B/16"), device="meta"), None)
    assert kinds == ["first-conv", "position-embedding"] and list(skipped) == ["patch-embedding"]
    assert inspect.plan(build_model(get_spec("Mixer-B/16"), device="meta"), None) == (
        ["token-mixing", "patch-embedding"], {})
    assert inspect.plan(build_model(get_spec("ViT-B/16"), device="meta"), None) == (
        ["patch-embedding", "position-embedding"], {})
    assert inspect.plan(build_model(get_spec("BiT-R50x1"), device="meta"), None) == (["first-conv"], {})


def test_a_model_without_the_layer_says_so_in_one_line_and_the_others_go_on(tmp_path, capsys):
    out = tmp_path / "o"
    assert inspect.main(["--models", "test_resnet,test_vit", "--kinds", "position-embedding", "--weights", "random",
                         "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["test_resnet: position-embedding skipped: no learned position embedding (pos_embed)"]
    manifest = pd.read_csv(out / "inspect.csv")
    assert manifest[["model", "kind"]].values.tolist() == [["test_vit", "position-embedding"]]


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------

def test_the_report_shows_the_pictures_side_by_side_with_their_checkpoint(run, tmp_path):
    out, manifest = run
    results = tmp_path / "results"
    shutil.copytree(out, results / "inspect")
    page = report.build_report(results, tmp_path / "report" / "index.html", progress=False)
    html = (tmp_path / "report" / "index.html").read_text()
    learned_section = next(s for s in page["sections"] if s.title == "What the models learned")
    assert [f.slug for f in learned_section.figures] == [
        "learned-locality", "learned-mixer-s-32-token-mixing-1", "learned-mixer-s-32-token-mixing-2",
        "learned-mixer-s-32-token-mixing-3", "learned-mixer-s-32-patch-embedding"]
    tag = manifest["weights"].iloc[0]
    assert all(f"Checkpoint: {tag}" in f.caption for f in learned_section.figures[1:])
    assert html.count("<figure id=\"figure-learned-") == 5 and "Locality of the token-mixing units by depth" in html
    assert (tmp_path / "report" / "table-learned-locality.csv").is_file()
    assert [s.title for s in page["sections"]][-2:] == ["What the models learned", "Environment and method"]
    shutil.rmtree(results / "inspect")
    page = report.build_report(results, tmp_path / "report" / "index.html", progress=False)
    assert "What the models learned" not in [s.title for s in page["sections"]]


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------

def one_line_exit_2(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        inspect.main(["--no-progress", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m suite.inspect: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path / "o")]
    unknown = one_line_exit_2(capsys, "--models", "Mixer-Q/99", "--weights", "random", *out)
    assert "unknown model 'Mixer-Q/99'" in unknown
    wrong = tmp_path / "resnet.pth"
    torch.save(build_model(get_spec("test_resnet")).state_dict(), wrong)
    assert "does not fit test_vit" in one_line_exit_2(capsys, "--models", "test_vit", "--weights", str(wrong), *out)
    assert "not found" in one_line_exit_2(capsys, "--models", "test_vit", "--weights", str(tmp_path / "no.pth"), *out)
    assert "no pretrained weights" in one_line_exit_2(capsys, "--models", "Mixer-S/32", *out)
    assert "--blocks" in one_line_exit_2(capsys, "--models", "test_vit", "--blocks", "0", *out)
    assert "--kinds" in one_line_exit_2(capsys, "--models", "test_vit", "--kinds", "gradients", *out)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "cannot write" in one_line_exit_2(capsys, "--models", "test_vit", "--weights", "random",
                                             "--out", str(blocker / "inspect"))
    assert not (tmp_path / "o" / "inspect.csv").exists()


def test_a_malformed_manifest_is_refused_naming_the_file_and_line(tmp_path, capsys):
    manifest = tmp_path / "results" / "inspect" / "inspect.csv"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("model,family,weights,weights_sha256,kind,block,tile,file,locality,locality_uniform\n"
                        "Mixer-B/16,mlp,random(seed=0),,locality,1,14×14,m/locality.png,0.5,5.35\n"
                        "Mixer-B/16,mlp,random(seed=0),,locality,2,14×14,m/locality.png,wide,5.35\n")
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "r" / "index.html"),
                     "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "inspect.csv: line 3: locality 'wide' is not a number" in err and "\n" not in err
