"""Frozen pre-logits features of a model on a dataset split, cached on disk.

The features are what the classifier head would see: timm's `forward_features` then
`forward_head(pre_logits=True)`, on images prepared by the checkpoint's own data config (size,
crop, interpolation, mean/std, from timm's `resolve_data_config` + `create_transform`).

Extraction is float32 for real: TF32 is off for cuBLAS matmuls *and* cuDNN convolutions (whose
TF32 default is on, which would put every patch embedding and convolution of a GPU run in TF32),
and cuDNN's benchmark autotuner is off, so the algorithms do not change from run to run.

They are cached per (model, weights, dataset split, preprocessing, how they were computed) in one
file that holds the features of every example computed so far, so a run with other shots or seeds
computes only the examples it has not seen (none, usually). For a local checkpoint the key includes
the file's SHA-256, so a changed checkpoint never reuses stale features; the device, its name, the
precision and TF32 state and the torch / timm / cuDNN versions are in the key too, so CPU and GPU
features (or features of two torch versions) never mix in one probe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from suite.data import ImageSet, UnreadableImage
from suite.results import device_name
from suite.timing import precision_flags
from suite.zoo import ModelSpec, build_model

#: torch seed used to initialise `--weights random` models, so their features are repeatable.
RANDOM_INIT_SEED = 0
WEIGHT_CHOICES = ("pretrained", "random")


class WeightsError(ValueError):
    """Weights that cannot be loaded; the message is one line naming what to do instead."""


@dataclass(frozen=True)
class Weights:
    """Which weights a model gets: timm's pretrained tag, a seeded random init, or a local checkpoint."""

    kind: str  # "pretrained", "random" or "path"
    path: Path | None = None
    sha256: str = ""

    def tag(self, spec: ModelSpec) -> str:
        """What the results rows call these weights."""
        if self.kind == "pretrained":
            return spec.pretrained_tag or ""
        if self.kind == "random":
            return f"random(seed={RANDOM_INIT_SEED})"
        return f"file:{self.path.name}@{self.sha256[:12]}"


def parse_weights(text: str) -> Weights:
    """`pretrained`, `random` or the path of a checkpoint (.pth, .pt, .bin, .safetensors)."""
    if text in WEIGHT_CHOICES:
        return Weights(text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint {text} not found; give an existing file, 'pretrained' or 'random'")
    return Weights("path", path.resolve(), file_sha256(path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Models and preprocessing
# --------------------------------------------------------------------------------------------------

def data_config(spec: ModelSpec, weights: Weights) -> dict[str, Any]:
    """The preprocessing of the checkpoint: its pretrained config for `pretrained`, else the model's default."""
    import timm.data
    import timm.models

    model = build_model(spec, num_classes=None, device="meta")
    pretrained_cfg = None
    if weights.kind == "pretrained":
        if not spec.pretrained_tag:
            raise WeightsError(f"{spec.name} has no pretrained weights in timm; use --weights PATH (a local "
                               f"checkpoint) or --weights random")
        cfg = timm.models.get_pretrained_cfg(spec.pretrained_tag)
        pretrained_cfg = cfg.to_dict() if cfg is not None else None
    return timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg, model=model)


def make_transform(config: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    import timm.data

    return timm.data.create_transform(**config, is_training=False)


def load_model(spec: ModelSpec, weights: Weights, device: torch.device | str = "cpu") -> nn.Module:
    """Build `spec` with `weights` on `device`, in eval mode; WeightsError with one line if impossible."""
    if weights.kind == "pretrained":
        if not spec.pretrained_tag:
            raise WeightsError(f"{spec.name} has no pretrained weights in timm; use --weights PATH or --weights random")
        try:
            model = build_model(spec, pretrained=True, num_classes=None)
        except Exception as exc:  # hub errors vary: OSError, HTTPError, LocalEntryNotFoundError, ...
            reason = " ".join(str(exc).split())[:100] or type(exc).__name__
            raise WeightsError(f"cannot load pretrained {spec.pretrained_tag} ({type(exc).__name__}: {reason}); "
                               f"without access to the Hugging Face hub use --weights PATH (a local checkpoint) "
                               f"or --weights random") from None
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = build_model(spec, pretrained=False, num_classes=None)
        if weights.kind == "path":
            load_checkpoint(model, weights.path, spec.name)
    return model.to(device).eval()


def classifier_prefixes(model: nn.Module) -> list[str]:
    """Module names of the classifier (timm's `get_classifier()`), whose weights may differ."""
    getter = getattr(model, "get_classifier", None)
    head = getter() if callable(getter) else None
    if head is None:
        return []
    return [name for name, module in model.named_modules() if module is head and name]


def load_checkpoint(model: nn.Module, path: Path, model_name: str = "model") -> None:
    """Load a state_dict (bare, or under 'state_dict'/'model') into `model`: strict but for the classifier.

    Every backbone tensor must be present with the right shape; classifier tensors are loaded when
    their shape fits and otherwise left alone (pre-logits features do not depend on them).
    """
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=False)
    except Exception as exc:  # corrupt or foreign files fail in torch.load / safetensors in many ways
        raise WeightsError(f"cannot read checkpoint {path} ({type(exc).__name__}); save it with "
                           f"torch.save(model.state_dict(), path) or safetensors") from None
    own = model.state_dict()
    heads = classifier_prefixes(model)

    def is_head(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in heads)

    missing = [k for k in own if k not in state and not is_head(k)]
    unexpected = [k for k in state if k not in own and not is_head(k)]
    mismatched = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape) and not is_head(k)]
    if missing or unexpected or mismatched:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)) if v]
        raise WeightsError(f"checkpoint {path} does not fit {model_name}: {', '.join(parts)} backbone tensors")
    fitting = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(fitting, strict=False)


def pre_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What the classifier head sees: `forward_features` then `forward_head(pre_logits=True)`."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------

class _PreparedImages(torch.utils.data.Dataset):
    """Selected images of a split through a transform; unreadable ones come back as zeros, flagged."""

    def __init__(self, images: ImageSet, indices: Sequence[int], transform: Callable[[Any], torch.Tensor],
                 input_size: Sequence[int]) -> None:
        self.images, self.indices, self.transform = images, list(indices), transform
        self.input_size = tuple(input_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, bool]:
        try:
            return self.transform(self.images.load(self.indices[position])), True
        except UnreadableImage:
            return torch.zeros(self.input_size), False


def extract(model: nn.Module, images: ImageSet, indices: Sequence[int], config: dict[str, Any], *,
            device: torch.device | str = "cpu", batch_size: int = 64, workers: int = 0,
            description: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Pre-logits features (float32, len(indices) x D) and a readable mask, in batches with a progress bar."""
    dataset = _PreparedImages(images, indices, make_transform(config), config["input_size"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False,
                                         pin_memory=torch.device(device).type == "cuda")
    features, readable = [], []
    with exact_fp32(torch.device(device)), torch.inference_mode():
        for batch, ok in tqdm(loader, desc=description, unit="batch", leave=False, dynamic_ncols=True):
            out = pre_logits(model, batch.to(device, non_blocking=True))
            features.append(out.float().cpu().numpy())
            readable.append(ok.numpy().astype(bool))
    if not features:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=bool)
    return np.concatenate(features), np.concatenate(readable)


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """Float32 as it says: TF32 off for matmul and convolution, cuDNN's autotuner off; restored after."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        with precision_flags("fp32", device):
            yield
    finally:
        torch.backends.cudnn.benchmark = saved


def extraction_key(device: torch.device | str) -> dict[str, Any]:
    """Everything besides the model, weights, data and preprocessing that changes the features."""
    import timm

    device = torch.device(device)
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" else None
    return {"device": device.type, "device_name": device_name(device), "precision": "fp32", "tf32": False,
            "cudnn_benchmark": False, "torch": torch.__version__, "timm": timm.__version__,
            "cudnn": str(cudnn or "")}


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "suite" / "features"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60]


@dataclass
class FeatureStore:
    """The features computed so far for one (model, weights, dataset split, preprocessing)."""

    path: Path
    key: dict[str, Any]
    features: dict[int, np.ndarray]
    unreadable: set[int]

    @classmethod
    def open(cls, cache_dir: Path, key: dict[str, Any]) -> FeatureStore:
        text = json.dumps(key, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        name = "-".join(_slug(str(key[k])) for k in ("model", "dataset", "split", "img_size"))
        path = Path(cache_dir).expanduser() / f"{name}-{digest}.pt"
        features: dict[int, np.ndarray] = {}
        unreadable: set[int] = set()
        if path.is_file():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                if saved.get("key") == json.loads(text):
                    features = dict(zip(saved["indices"].tolist(), saved["features"].numpy()))
                    unreadable = set(saved["unreadable"].tolist())
            except Exception:  # a torn or foreign cache file is recomputed, never trusted
                features, unreadable = {}, set()
        return cls(path, json.loads(text), features, unreadable)

    def missing(self, indices: Sequence[int]) -> list[int]:
        return [i for i in indices if i not in self.features and i not in self.unreadable]

    def add(self, indices: Sequence[int], features: np.ndarray, readable: np.ndarray, save: bool = True) -> None:
        for position, index in enumerate(indices):
            if readable[position]:
                self.features[int(index)] = features[position]
            else:
                self.unreadable.add(int(index))
        if save:
            self.save()

    def save(self) -> None:
        """Write the whole store through a temporary file and an atomic rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        indices = sorted(self.features)
        stacked = np.stack([self.features[i] for i in indices]) if indices else np.zeros((0, 0), np.float32)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save({"key": self.key, "indices": torch.tensor(indices, dtype=torch.int64),
                    "features": torch.from_numpy(np.ascontiguousarray(stacked)),
                    "unreadable": torch.tensor(sorted(self.unreadable), dtype=torch.int64)}, tmp)
        os.replace(tmp, self.path)

    def matrix(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self.features[int(i)] for i in indices])


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's processes: rank 0 of 1 without torchrun.

    Each rank extracts one contiguous slice of what is missing (not DistributedSampler, which pads
    with duplicate images), and every rank gathers all slices in rank order, so every rank holds
    the features in the order a single process would have computed them.
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def slice(self, items: Sequence[int]) -> list[int]:
        per = -(-len(items) // self.world)
        return list(items[self.rank * per:(self.rank + 1) * per])

    def gather(self, payload: Any) -> list[Any]:
        if self.world == 1:
            return [payload]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, payload)
        return gathered


class FeatureSource:
    """Features of one model with one set of weights, on any dataset split, computed only when not cached.

    The model is built (and its weights loaded) on first need, so a fully cached run needs neither
    the hub nor a forward pass.
    """

    def __init__(self, spec: ModelSpec, weights: Weights, cache_dir: Path, *, device: torch.device | str = "cpu",
                 batch_size: int = 64, workers: int = 0, ranks: Ranks | None = None) -> None:
        self.spec, self.weights, self.cache_dir = spec, weights, Path(cache_dir)
        self.device, self.batch_size, self.workers = device, batch_size, workers
        self.ranks = ranks or Ranks()
        self.config = data_config(spec, weights)
        self._model: nn.Module | None = None

    @property
    def img_size(self) -> int:
        return int(self.config["input_size"][-1])

    def model(self) -> nn.Module:
        if self._model is None:
            self._model = load_model(self.spec, self.weights, self.device)
        return self._model

    def store(self, images: ImageSet) -> FeatureStore:
        key = {
            "model": self.spec.name, "build": self.spec.build_source, "weights": self.weights.tag(self.spec),
            "weights_sha256": self.weights.sha256, "dataset": images.name, "split": images.split,
            "source": images.source, "img_size": self.img_size, "preprocessing": self.config,
            "extraction": extraction_key(self.device),
        }
        return FeatureStore.open(self.cache_dir, key)

    def ensure(self, store: FeatureStore, images: ImageSet, indices: Sequence[int]) -> int:
        """Compute and cache the features of `indices` not yet in `store`; returns how many were computed.

        Under torchrun each rank computes its slice and all ranks gather every slice; rank 0 alone
        writes the cache. Every rank must call this with the same `indices` (they read one cache).
        """
        todo = store.missing(indices)
        if not todo:
            return 0
        mine = self.ranks.slice(todo)
        if mine:
            features, readable = extract(self.model(), images, mine, self.config, device=self.device,
                                         batch_size=self.batch_size, workers=self.workers,
                                         description=f"{self.spec.name} {images.name}/{images.split}")
        else:
            features, readable = np.zeros((0, 0), np.float32), np.zeros(0, bool)
        parts = [part for part in self.ranks.gather((mine, features, readable)) if len(part[0])]
        store.add([i for part in parts for i in part[0]], np.concatenate([part[1] for part in parts]),
                  np.concatenate([part[2] for part in parts]), save=self.ranks.rank == 0)
        return len(todo)
