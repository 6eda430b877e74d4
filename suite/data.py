"""Labelled image datasets for the few-shot harness, each a train and a test split of PIL images.

Every dataset is presented the same way, an :class:`ImageSet` per split: integer labels known
up front (so few-shot sampling needs no image decoding) and `load(i)`, which returns an RGB PIL
image or raises :class:`UnreadableImage`. Keeping raw PIL images means the model's own timm
transform applies to every dataset alike.

Names accepted by :func:`load_dataset`:
  digits             scikit-learn's bundled 8x8 digits (no download): 1797 images, upscaled to
                     32x32 RGB; train = the first 1000 images, test = the other 797
  cifar10, cifar100  torchvision CIFAR (train / test)
  pets               torchvision OxfordIIITPet (trainval / test)
  flowers102         torchvision Flowers102 (train / test)
  imagenet           an image folder DATA_DIR/imagenet/{train,val} if present, else torchvision
                     ImageNet(DATA_DIR/imagenet) (needs the official archives there; no download)
  imagefolder:PATH   PATH/train and PATH/test (or PATH/val), one sub-folder per class
  imagefolder        the same with PATH = --data-dir
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Extensions an image folder's files may have (those torchvision's ImageFolder accepts).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TORCHVISION_SETS = ("cifar10", "cifar100", "pets", "flowers102")
DATASET_NAMES = ("digits", *TORCHVISION_SETS, "imagenet", "imagefolder", "imagefolder:PATH")
DIGITS_TRAIN_SIZE = 1000
DIGITS_SIDE = 32


class DataError(ValueError):
    """A dataset that cannot be used as asked; the message is one line saying what to do."""


class UnreadableImage(Exception):
    """One image that cannot be decoded; the harness skips and counts it."""


@dataclass
class ImageSet:
    """One split of a labelled dataset: labels up front, images decoded on demand."""

    name: str
    split: str
    classes: list[str]
    labels: np.ndarray
    loader: Callable[[int], Image.Image] = field(repr=False)
    #: Identifies the data for the feature cache (resolved path, split, size).
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load(self, index: int) -> Image.Image:
        """The image at `index` as RGB; raises UnreadableImage if it cannot be decoded."""
        try:
            image = self.loader(index)
            return to_rgb(image)
        except UnreadableImage:
            raise
        except Exception as exc:  # any decoder failure makes this one image unusable, not the run
            raise UnreadableImage(f"{self.name}/{self.split}[{index}]: {type(exc).__name__}: {exc}") from None

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


@dataclass
class Dataset:
    """A train and a test split with the same classes."""

    name: str
    train: ImageSet
    test: ImageSet

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, CMYK or RGBA to RGB (alpha composited on white); RGB unchanged."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


# --------------------------------------------------------------------------------------------------
# digits: embedded, no download
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileImages:
    """Loads image `i` of a list of files. A class, not a closure, so DataLoader workers can be spawned."""

    paths: tuple[Path, ...]

    def __call__(self, index: int) -> Image.Image:
        return _open_image(self.paths[index])


@dataclass(frozen=True)
class DigitImages:
    """Loads 8x8 grey digit `i` upscaled (nearest) to `side` x `side`; picklable like FileImages."""

    pixels: np.ndarray
    side: int

    def __call__(self, index: int) -> Image.Image:
        small = Image.fromarray(self.pixels[index], mode="L")
        return small.resize((self.side, self.side), Image.Resampling.NEAREST)


@dataclass(frozen=True)
class TorchvisionImages:
    """Loads image `i` of a torchvision dataset (its first item); picklable like FileImages."""

    dataset: Any

    def __call__(self, index: int) -> Image.Image:
        return self.dataset[index][0]


def digits() -> Dataset:
    """scikit-learn's 8x8 digits as 32x32 RGB images; train = first 1000, test = the remaining 797."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    classes = [str(c) for c in bunch.target_names]

    def split(name: str, rows: slice) -> ImageSet:
        split_labels = labels[rows]
        return ImageSet("digits", name, classes, split_labels, DigitImages(pixels[rows], DIGITS_SIDE),
                        f"sklearn-digits:{name}:{len(split_labels)}")

    return Dataset("digits", split("train", slice(0, DIGITS_TRAIN_SIZE)), split("test", slice(DIGITS_TRAIN_SIZE, None)))


# --------------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------------

def _class_files(folder: Path) -> dict[str, list[Path]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {c: sorted(f for f in (folder / c).rglob("*")
                      if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
            for c in classes}


def _open_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.copy()


def image_folder(root: str | os.PathLike, name: str | None = None) -> Dataset:
    """ROOT/train and ROOT/test (or ROOT/val), each with one sub-folder of images per class."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; give a folder with train/ and test/ (or val/) inside")
    test_dir = next((root / s for s in ("test", "val", "validation") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DataError(f"image folder {root} needs a train/ and a test/ (or val/) sub-folder, one folder per class in each")
    train_files = _class_files(root / "train")
    test_files = _class_files(test_dir)
    classes = sorted(set(train_files) | set(test_files))
    if not any(train_files.values()):
        raise DataError(f"image folder {root / 'train'} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if not any(test_files.values()):
        raise DataError(f"image folder {test_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    label = {c: i for i, c in enumerate(classes)}
    dataset_name = name or f"imagefolder:{root}"

    def split(split_name: str, files: dict[str, list[Path]]) -> ImageSet:
        paths = [f for c in classes for f in files.get(c, [])]
        labels = np.array([label[c] for c in classes for _ in files.get(c, [])], dtype=np.int64)
        return ImageSet(dataset_name, split_name, classes, labels, FileImages(tuple(paths)),
                        f"folder:{(root / split_name).resolve() if split_name == 'train' else test_dir.resolve()}:"
                        f"{len(paths)}")

    return Dataset(dataset_name, split("train", train_files), split(test_dir.name, test_files))


# --------------------------------------------------------------------------------------------------
# torchvision sets
# --------------------------------------------------------------------------------------------------

_TORCHVISION: dict[str, tuple[str, str, str, str]] = {
    # name: (torchvision class, train split, test split, labels attribute)
    "cifar10": ("CIFAR10", "train", "test", "targets"),
    "cifar100": ("CIFAR100", "train", "test", "targets"),
    "pets": ("OxfordIIITPet", "trainval", "test", "_labels"),
    "flowers102": ("Flowers102", "train", "test", "_labels"),
}


def _torchvision_split(cls: Any, name: str, root: Path, split: str, download: bool) -> Any:
    if name.startswith("cifar"):
        return cls(root=str(root), train=(split == "train"), download=download)
    return cls(root=str(root), split=split, download=download)


def torchvision_dataset(name: str, data_dir: str | os.PathLike, download: bool = True) -> Dataset:
    """A torchvision dataset from `data_dir/name`, downloaded there first when missing and allowed."""
    import torchvision.datasets as tvd

    class_name, train_split, test_split, labels_attr = _TORCHVISION[name]
    cls = getattr(tvd, class_name)
    root = Path(data_dir).expanduser() / name
    splits = {}
    for split in (train_split, test_split):
        try:
            splits[split] = _torchvision_split(cls, name, root, split, download=False)
        except RuntimeError:
            if not download:
                raise DataError(f"{name} is not in {root}; run once with internet access (it downloads there), "
                                f"or use --datasets digits or imagefolder:PATH") from None
            try:
                root.mkdir(parents=True, exist_ok=True)
                splits[split] = _torchvision_split(cls, name, root, split, download=True)
            except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError)
                raise DataError(f"cannot download {name} into {root} ({type(exc).__name__}); run once with internet "
                                f"access or copy it there, or use --datasets digits or imagefolder:PATH") from None

    def as_set(split: str, tv: Any) -> ImageSet:
        labels = np.asarray(getattr(tv, labels_attr), dtype=np.int64)
        classes = [str(c) for c in getattr(tv, "classes", range(int(labels.max()) + 1))]
        if len(classes) <= int(labels.max()):
            classes = [str(c) for c in range(int(labels.max()) + 1)]
        return ImageSet(name, split, classes, labels, TorchvisionImages(tv), f"torchvision:{class_name}:{root.resolve()}:"
                        f"{split}:{len(labels)}")

    train, test = as_set(train_split, splits[train_split]), as_set(test_split, splits[test_split])
    if len(test.classes) > len(train.classes):
        train.classes = test.classes
    else:
        test.classes = train.classes
    return Dataset(name, train, test)


def imagenet(data_dir: str | os.PathLike) -> Dataset:
    """ImageNet-1k from DATA_DIR/imagenet: an image folder with train/ and val/, else torchvision's ImageNet."""
    root = Path(data_dir).expanduser() / "imagenet"
    if (root / "train").is_dir() and (root / "val").is_dir():
        return image_folder(root, name="imagenet")
    import torchvision.datasets as tvd

    try:
        train = tvd.ImageNet(str(root), split="train")
        val = tvd.ImageNet(str(root), split="val")
    except (RuntimeError, OSError) as exc:
        raise DataError(f"ImageNet not found in {root} ({' '.join(str(exc).split())[:120]}); put train/ and val/ "
                        f"class folders there, or the official ILSVRC2012 archives for torchvision") from None
    classes = [names[0] for names in train.classes]

    def as_set(split: str, tv: Any) -> ImageSet:
        paths = [p for p, _ in tv.samples]
        return ImageSet("imagenet", split, classes, np.asarray(tv.targets, dtype=np.int64),
                        FileImages(tuple(Path(p) for p in paths)), f"torchvision:ImageNet:{root.resolve()}:{split}")

    return Dataset("imagenet", as_set("train", train), as_set("val", val))


def load_dataset(name: str, data_dir: str | os.PathLike = "data", download: bool = True) -> Dataset:
    """The dataset called `name` (see the module docstring); DataError with one line if unusable."""
    key = name.strip()
    lower = key.lower()
    if lower == "digits":
        return digits()
    if lower in _TORCHVISION:
        return torchvision_dataset(lower, data_dir, download)
    if lower == "imagenet":
        return imagenet(data_dir)
    if lower == "imagefolder":
        return image_folder(data_dir)
    if lower.startswith("imagefolder:"):
        return image_folder(key.split(":", 1)[1])
    raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASET_NAMES)}")


def parse_datasets(text: str) -> list[str]:
    """Split a `--datasets` value on commas (image-folder paths may not contain commas)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise DataError("no datasets given; try --datasets digits")
    return names


def check_shots(dataset: Dataset, shots: Sequence[int]) -> None:
    """Refuse shot counts larger than the smallest training class (one line naming the class)."""
    counts = dataset.train.class_counts()
    smallest = int(np.argmin(counts))
    if max(shots) > counts[smallest]:
        raise DataError(f"{max(shots)} shots asked but class {dataset.train.classes[smallest]!r} of {dataset.name} "
                        f"{dataset.train.split} has only {counts[smallest]} images; lower --shots")
