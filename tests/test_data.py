"""Datasets of the few-shot harness: the embedded digits, image folders, torchvision sets offline."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from suite import data


def write_image_folder(root: Path, classes=("cat", "dog", "owl"), train_per_class=6, test_per_class=3) -> Path:
    """A tiny train/test image folder: RGB, grayscale and RGBA files, one corrupt file in train."""
    rng = np.random.default_rng(0)
    modes = ("RGB", "L", "RGBA")
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = (rng.integers(0, 60, size=(24, 24, 3)) + 90 * c).astype(np.uint8)
                image = Image.fromarray(pixels).convert(modes[i % 3])
                image.save(folder / f"{i}.png")
    (root / "train" / classes[0] / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_digits_is_embedded_with_a_fixed_split():
    dataset = data.load_dataset("digits")
    assert (len(dataset.train), len(dataset.test), dataset.num_classes) == (1000, 797, 10)
    image = dataset.train.load(0)
    assert image.mode == "RGB" and image.size == (32, 32)
    assert dataset.train.labels[0] == 0 and set(dataset.test.labels) == set(range(10))
    np.testing.assert_array_equal(data.load_dataset("digits").test.labels, dataset.test.labels)


def test_image_folder_converts_modes_and_flags_unreadable(tmp_path):
    dataset = data.load_dataset(f"imagefolder:{write_image_folder(tmp_path / 'set')}")
    assert dataset.train.classes == ["cat", "dog", "owl"]
    assert len(dataset.train) == 19 and len(dataset.test) == 9
    assert np.bincount(dataset.train.labels).tolist() == [7, 6, 6]
    broken = [i for i in range(len(dataset.train)) if _unreadable(dataset.train, i)]
    assert len(broken) == 1
    modes = {dataset.train.load(i).mode for i in range(len(dataset.train)) if i not in broken}
    assert modes == {"RGB"}


def test_splits_pickle_so_spawned_loader_workers_can_use_them(tmp_path):
    # DataLoader workers started with 'spawn' (macOS, Windows) receive the dataset by pickling.
    folder = data.load_dataset(f"imagefolder:{write_image_folder(tmp_path / 'set')}")
    for images in (data.load_dataset("digits").train, folder.test):
        copy = pickle.loads(pickle.dumps(images))
        assert np.array_equal(np.asarray(copy.load(1)), np.asarray(images.load(1)))
        assert copy.labels.tolist() == images.labels.tolist()


def _unreadable(images: data.ImageSet, index: int) -> bool:
    try:
        images.load(index)
    except data.UnreadableImage:
        return True
    return False


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    assert data.to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert data.to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)


def test_val_folder_is_accepted_and_dataset_dir_form(tmp_path):
    root = write_image_folder(tmp_path / "set")
    (root / "test").rename(root / "val")
    dataset = data.load_dataset("imagefolder", data_dir=root)
    assert dataset.test.split == "val" and len(dataset.test) == 9


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "does not exist"),
    ("no_test", "needs a train/ and a test/"),
    ("empty", "holds no images"),
])
def test_bad_image_folders_give_one_line(tmp_path, setup, message):
    root = tmp_path / "set"
    if setup != "missing":
        (root / "train" / "a").mkdir(parents=True)
    if setup == "empty":
        (root / "test" / "a").mkdir(parents=True)
    with pytest.raises(data.DataError, match=message) as info:
        data.load_dataset(f"imagefolder:{root}")
    assert "\n" not in str(info.value)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(data.DataError, match="unknown dataset 'cifar11'.*digits"):
        data.load_dataset("cifar11")


def test_torchvision_set_offline_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class OfflineCIFAR:
        def __init__(self, root, train, download):
            calls.append(download)
            if download:
                raise urllib.error.URLError("no network")
            raise RuntimeError("Dataset not found or corrupted")

    monkeypatch.setattr(tvd, "CIFAR10", OfflineCIFAR)
    with pytest.raises(data.DataError, match="cannot download cifar10 into .*--datasets digits"):
        data.load_dataset("cifar10", data_dir=tmp_path)
    assert calls == [False, True]
    with pytest.raises(data.DataError, match="not in .*internet"):
        data.load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_torchvision_set_labels_come_from_the_dataset(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class FakePets:
        def __init__(self, root, split, download):
            self._labels = [0, 1, 1] if split == "trainval" else [1, 0]
            self.classes = ["Abyssinian", "Bengal"]

        def __getitem__(self, i):
            return Image.new("L", (4, 4)), self._labels[i]

    monkeypatch.setattr(tvd, "OxfordIIITPet", FakePets)
    dataset = data.load_dataset("pets", data_dir=tmp_path)
    assert (dataset.train.split, dataset.test.split) == ("trainval", "test")
    assert dataset.train.labels.tolist() == [0, 1, 1] and dataset.train.load(0).mode == "RGB"


def test_check_shots_names_the_smallest_class(tmp_path):
    dataset = data.load_dataset(f"imagefolder:{write_image_folder(tmp_path / 'set')}")
    data.check_shots(dataset, [1, 6])
    with pytest.raises(data.DataError, match="7 shots asked but class 'dog'.*only 6"):
        data.check_shots(dataset, [7])
