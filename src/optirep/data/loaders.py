"""`load(name, ...)`: every dataset as train/val/test splits plus an `info` dict.

data_args (all optional; an unknown one is an error that lists the accepted ones):

| arg | datasets | meaning |
|---|---|---|
| `val_size` | all but wikitext | int count or fraction in [0, 1) carved from train, stratified, seeded by `split_seed`. Defaults: CIFAR 5000 (45k/5k), tinyshakespeare 0.1 (the last 10% of tokens), others 0.1 |
| `split_seed` | classification | seed of the val (and, for digits, test) carve-out; default 0, fixed across run seeds |
| `train_fraction` | all | (0, 1]: stratified per-class fraction of the remaining train (LM: the leading fraction of train tokens) |
| `per_class` | classification | examples per class kept for training (instead of `train_fraction`) |
| `subset_seed` | classification | seed of the training subset; default = `seed`, so every optimizer at a seed shares it |
| `pad` | mnist, fashion_mnist | int >= 0 (default 0): pixels of background (0, before normalisation) added on each side; 2 gives 32x32, the size of CIFAR models |
| `test_size` | mnist, fashion_mnist | int >= 1: keep only the first N official test images (quick checks of a task on real data; a study uses the whole test set, the default) |
| `channels` | mnist, fashion_mnist | 1 (default) or 3: the grey image replicated to 3 channels (for 3-channel models; every channel gets the 1-channel statistics) |
| `augment` | cifar10, cifar100, digits32, mnist and fashion_mnist at 32x32 (`pad: 2`) | bool; True (default for CIFAR, the V6 protocol) sets `info["augment"] = "crop_flip"`: the loop calls `optirep.data.augment(x, info["augment"], g, fill=info["augment_fill"])` per training batch |
| `normalize` | image | protocol name, see `NORMALIZE`: cifar10 "v6" (mean=std=0.5, default) / "grn" / "none"; cifar100 "v6" (default) / "none"; mnist, fashion_mnist "neuroplastic" (0.5, 0.5; default) / "grn" (0.1307, 0.3081; the GRN MNIST protocol) / "none"; digits "half" (x/16 then (x-0.5)/0.5; default) / "none" |
| `tokenizer` | LM, text | see `optirep.data.text` |
| `max_len` | imdb, ag_news | tokens per example (default 128, the GRN protocol) |
| `size` | voc2012 | side of the square images and masks (default 224, the GRN protocol: image bilinear, mask nearest, aspect ratio not kept) |
| `seed_mask_bug` | voc2012 | bool, default False. True reproduces the seed's targets: `ToTensor` on the palette mask divides by 255, so the long cast maps classes 0..20 to 0 and void 255 to 1 (two "classes", nothing ignored). A deviation kept only to replicate the seed's numbers |

Pascal VOC 2012 (`voc2012`, the GRN segmentation protocol): test is the official `val` list
(1449 images), touched only for final metrics; validation (`val_size`, default 0.1) and the
training subset (`train_fraction`) are carved from the official `train` list (1464 images),
stratified by each image's dominant object class (the class covering most pixels, 0 when there
is none). Targets `y` are int64 `[N, S, S]` class indices 0..20 with 255 = void, which the
segmentation objective ignores (`info["ignore_index"]`); `normalize` "imagenet" (default) or "none".
JPEGs are decoded and resized once per (`split`, `size`) into `<root>/voc2012/segmentation.<split>.s<size>.npz`.

Image inputs are float32 `[N, C, H, W]` already normalised; `mnist1d` is float32 `[N, 40]`
(standardised by its generator); text classification inputs are int64 `[N, max_len]`;
language-modelling splits are 1-D int64 token tensors; segmentation inputs are float32
`[N, 3, S, S]` with int64 `[N, S, S]` masks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from optirep.data.fetch import data_root, fetch, hf_split_files, installed, md5sum
from optirep.data.formats import (MNIST1D_SEED, VOC_CLASSES, VOC_VOID, digits, mnist1d, read_cifar, read_idx,
                                  read_parquet, read_voc)
from optirep.data.sources import EMBEDDED, SOURCES
from optirep.data.splits import Splits, TensorSplit, carve_val, resolve_size, train_subset
from optirep.data.text import cached_array, classification_tokenizer, lm_tokenizer

__all__ = ["load", "DATASETS", "NORMALIZE", "SEGMENTATION_DATASETS"]

DATASETS = ("digits8", "digits32", "mnist1d", "mnist", "fashion_mnist", "cifar10", "cifar100",
            "tinyshakespeare", "wikitext2", "wikitext103", "imdb", "ag_news", "voc2012")
#: datasets whose targets are per-pixel masks (objective `segmentation`)
SEGMENTATION_DATASETS = ("voc2012",)

#: dataset -> protocol -> (mean, std) per channel, applied to pixels scaled to [0, 1].
#: The first protocol of each dataset is its default.
_MNIST_NORM = {"neuroplastic": ((0.5,), (0.5,)), "grn": ((0.1307,), (0.3081,)), "none": ((0.0,), (1.0,))}
_DIGITS_NORM = {"half": ((0.5,), (0.5,)), "none": ((0.0,), (1.0,))}
NORMALIZE: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "cifar10": {"v6": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                "grn": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
                "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))},
    "cifar100": {"v6": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
                 "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))},
    "mnist": _MNIST_NORM,
    "fashion_mnist": _MNIST_NORM,
    "digits8": _DIGITS_NORM,
    "digits32": _DIGITS_NORM,
    "voc2012": {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))},
}

_NUM_CLASSES = {"digits8": 10, "digits32": 10, "mnist1d": 10, "mnist": 10, "fashion_mnist": 10,
                "cifar10": 10, "cifar100": 100, "imdb": 2, "ag_news": 4}
_CLASSIFICATION_ARGS = {"val_size", "split_seed", "train_fraction", "per_class", "subset_seed"}
_ALLOWED = {
    **{n: _CLASSIFICATION_ARGS | {"normalize", "augment"} for n in ("cifar10", "cifar100", "digits8", "digits32")},
    **{n: _CLASSIFICATION_ARGS | {"normalize", "augment", "pad", "channels", "test_size"} for n in ("mnist", "fashion_mnist")},
    "mnist1d": _CLASSIFICATION_ARGS | {"normalize"},
    "tinyshakespeare": {"tokenizer", "val_size", "train_fraction"},
    "wikitext2": {"tokenizer", "train_fraction"},
    "wikitext103": {"tokenizer", "train_fraction"},
    "imdb": _CLASSIFICATION_ARGS | {"tokenizer", "max_len"},
    "ag_news": _CLASSIFICATION_ARGS | {"tokenizer", "max_len"},
    "voc2012": {"val_size", "split_seed", "train_fraction", "subset_seed", "normalize", "size", "seed_mask_bug"},
}
_AUGMENTABLE = {"cifar10", "cifar100", "digits32"}


def load(name: str, root=None, mirror=None, seed: int = 0, **data_args) -> Splits:
    """Load dataset `name` as `Splits(train, val, test, info)`, fetching it first if needed.

    Args:
        name: one of `DATASETS`.
        root: data root (default `$OPTIREP_DATA` or `./data`); embedded datasets ignore it.
        mirror: offline mirror (default `$OPTIREP_DATA_MIRROR`), see `optirep.data.fetch`.
        seed: run seed; the default `subset_seed`.
        **data_args: see the module docstring.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {list(DATASETS)}")
    unknown = set(data_args) - _ALLOWED[name]
    if unknown:
        raise TypeError(f"load({name!r}): unknown data_args {sorted(unknown)}; accepted: {sorted(_ALLOWED[name])}")
    if name in ("tinyshakespeare", "wikitext2", "wikitext103"):
        return _load_lm(name, root, mirror, **data_args)
    if name in ("imdb", "ag_news"):
        return _load_text(name, root, mirror, seed, **data_args)
    if name == "voc2012":
        return _load_voc(root, mirror, seed, **data_args)
    return _load_array(name, root, mirror, seed, **data_args)


# ---------------------------------------------------------------------------------- arrays


def _read_arrays(name: str, root, mirror, split_seed: int):
    """(x_train, y_train, x_test, y_test) as numpy, pixels in [0, 1] for images."""
    if name in ("cifar10", "cifar100"):
        d = fetch(name, root, mirror)
        xtr, ytr = read_cifar(d, name, "train")
        xte, yte = read_cifar(d, name, "test")
        return xtr, ytr, xte, yte
    if name in ("mnist", "fashion_mnist"):
        d = fetch(name, root, mirror)
        arrays = [read_idx(installed(d, f)) for f in SOURCES[name].files]
        for (x, y), split in (((arrays[0], arrays[1]), "train"), ((arrays[2], arrays[3]), "t10k")):
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(f"{d}: {split} images {x.shape} and labels {y.shape} do not match")
        return arrays[0][:, None], arrays[1].astype(np.int64), arrays[2][:, None], arrays[3].astype(np.int64)
    if name in ("digits8", "digits32"):
        x, y = digits()
        # No official test split: a fixed, stratified 20% (360 images) seeded by split_seed.
        tr, te = carve_val(y, 360, split_seed)
        x = x[:, None] / np.float32(16.0)
        return x[tr], y[tr], x[te], y[te]
    if name == "mnist1d":
        d = mnist1d(cache=data_root(root) / "mnist1d" / f"mnist1d_seed{MNIST1D_SEED}.npz")
        return (d["x"].astype(np.float32), d["y"].astype(np.int64),
                d["x_test"].astype(np.float32), d["y_test"].astype(np.int64))
    raise AssertionError(name)


def _to_float(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


def _load_array(name: str, root, mirror, seed: int, val_size=None, split_seed: int = 0, train_fraction=None,
                per_class=None, subset_seed=None, normalize=None, augment=None, pad: int = 0, channels: int = 1,
                test_size=None) -> Splits:
    if name == "mnist1d":
        if normalize not in (None, "none"):
            raise ValueError(f"normalize for mnist1d must be 'none' (the generator standardises), got {normalize!r}")
        mean = std = None
        protocol = "generator"
    else:
        protocols = NORMALIZE[name]
        protocol = normalize if normalize is not None else next(iter(protocols))
        if protocol not in protocols:
            raise ValueError(f"normalize for {name} must be one of {list(protocols)}, got {protocol!r}")
        mean, std = protocols[protocol]
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad for {name} must be an int >= 0 (pixels per side), got {pad!r}")
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels for {name} must be 1 or 3, got {channels!r}")
    if augment is None:
        augment = name in ("cifar10", "cifar100")
    if augment and not (name in _AUGMENTABLE or (name in ("mnist", "fashion_mnist") and 28 + 2 * pad == 32)):
        raise ValueError(f"augment=True is only defined for {sorted(_AUGMENTABLE)} and for mnist/fashion_mnist padded "
                         f"to 32x32 (pad: 2) (crop+flip of 32x32 images), not {name} with pad {pad}")

    xtr, ytr, xte, yte = _read_arrays(name, root, mirror, split_seed)
    if test_size is not None:
        if isinstance(test_size, bool) or not isinstance(test_size, int) or test_size < 1:
            raise ValueError(f"test_size for {name} must be an int >= 1 (test images kept), got {test_size!r}")
        xte, yte = xte[:test_size], yte[:test_size]
    if val_size is None:
        val_size = 5000 if name in ("cifar10", "cifar100") else 0.1
    tr_pos, val_pos = carve_val(ytr, val_size, split_seed)
    sub_seed = seed if subset_seed is None else subset_seed
    train_idx = tr_pos[train_subset(ytr[tr_pos], train_fraction, per_class, sub_seed)]

    def make(idx_x: np.ndarray, x: np.ndarray, y: np.ndarray) -> TensorSplit:
        t = _to_float(x[idx_x])
        if name == "digits32":
            # bilinear to CIFAR's 32x32 and 3 channels, so CIFAR models and Grad-CAM run unchanged
            t = torch.nn.functional.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)
            t = t.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
        if pad:
            t = torch.nn.functional.pad(t, (pad,) * 4)  # black (0) borders, as the digits' background
        if mean is not None:
            m = torch.tensor(mean).reshape(1, -1, 1, 1)
            s = torch.tensor(std).reshape(1, -1, 1, 1)
            t = t.sub_(m).div_(s)
        if channels == 3 and t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)  # a view: the 3 channels share storage (a third of the memory)
        return TensorSplit(t, torch.from_numpy(np.ascontiguousarray(y[idx_x])))

    train = make(train_idx, xtr, ytr)
    val = make(val_pos, xtr, ytr)
    test = make(np.arange(len(yte)), xte, yte)

    channels = train.x.shape[1] if train.x.ndim == 4 else 1
    fill = [(-m / s) for m, s in zip(mean, std)] if mean is not None else [0.0]
    if len(fill) == 1 and channels > 1:
        fill = fill * channels
    info = {
        "name": name,
        "kind": "image" if train.x.ndim == 4 else "vector",
        "num_classes": _NUM_CLASSES[name],
        "input_shape": tuple(train.x.shape[1:]),
        "vocab_size": None,
        "normalisation": {"protocol": protocol, "mean": mean, "std": std},
        "augment": "crop_flip" if augment else "none",
        "augment_fill": fill,
        "source": EMBEDDED.get(name) or SOURCES[name].homepage,
        "root": None if name in ("digits8", "digits32") else str(data_root(root) / name),
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "subset": {"val_size": len(val), "split_seed": split_seed, "train_fraction": train_fraction,
                   "per_class": per_class, "subset_seed": sub_seed},
        **({"pad": pad, "channels": channels, "test_size": test_size} if name in ("mnist", "fashion_mnist") else {}),
    }
    return Splits(train, val, test, info)


# ---------------------------------------------------------------------------------- language modelling


def _lead(tokens: torch.Tensor, train_fraction) -> torch.Tensor:
    if train_fraction is None or float(train_fraction) == 1.0:
        return tokens
    f = float(train_fraction)
    if not 0.0 < f <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    return tokens[: max(2, int(len(tokens) * f))]


def _load_lm(name: str, root, mirror, tokenizer: str = "gpt2", val_size=None, train_fraction=None) -> Splits:
    d = fetch(name, root, mirror)
    if name == "tinyshakespeare":
        text = (d / "input.txt").read_text(encoding="utf-8")
        tok = lm_tokenizer(tokenizer, text, root, mirror)
        ids = cached_array(d / f"tokens.{tok.name}.npy", lambda: tok.encode(text), dtype=_token_dtype(tok.vocab_size))
        ids = torch.from_numpy(ids.astype(np.int64))
        # The V6 Shakespeare protocol: first 90% of tokens train, last 10% val; it has no
        # third split, so test is the same held-out tail (info["test_is_val"]).
        vs = 0.1 if val_size is None else val_size
        resolve_size(vs, len(ids), "val_size")  # validates type and range
        # int(0.9 * n) as in the seed's script (n = 338025 GPT-2 tokens -> 304222 / 33803)
        n_train = int(len(ids) * (1.0 - vs)) if isinstance(vs, float) else len(ids) - int(vs)
        train, val = ids[:n_train], ids[n_train:]
        test, test_is_val = val, True
    else:
        splits = {}
        tok = None
        for split in ("train", "validation", "test"):
            files = hf_split_files(d, split)
            if tok is None:
                corpus = None
                if tokenizer == "char":
                    corpus = "".join("".join(read_parquet(hf_split_files(d, s), ["text"])["text"])
                                     for s in ("train", "validation", "test"))
                tok = lm_tokenizer(tokenizer, corpus, root, mirror)
            arr = cached_array(d / f"tokens.{split}.{tok.name}.npy",
                               lambda files=files: tok.encode_lines(read_parquet(files, ["text"])["text"]),
                               dtype=_token_dtype(tok.vocab_size))
            splits[split] = torch.from_numpy(arr.astype(np.int64))
        train, val, test, test_is_val = splits["train"], splits["validation"], splits["test"], False
    train = _lead(train, train_fraction)
    info = {
        "name": name, "kind": "lm", "num_classes": None, "input_shape": None,
        "vocab_size": tok.vocab_size, "tokenizer": tok.name, **tok.extra,
        "source": SOURCES[name].homepage, "root": str(d),
        "n_train": len(train), "n_val": len(val), "n_test": len(test), "test_is_val": test_is_val,
        "subset": {"train_fraction": train_fraction},
    }
    return Splits(train, val, test, info)


def _token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


# ---------------------------------------------------------------------------------- text classification


def _load_text(name: str, root, mirror, seed: int, tokenizer: str = "bert-base-uncased", max_len: int = 128,
               val_size=None, split_seed: int = 0, train_fraction=None, per_class=None, subset_seed=None) -> Splits:
    d = fetch(name, root, mirror)
    encode, meta = classification_tokenizer(tokenizer, int(max_len), root, mirror)
    # a vocabulary file is named by its content, so two files never share a token cache
    tag = f"wordpiece-{md5sum(Path(tokenizer))[:10]}" if os.path.isfile(str(tokenizer)) else tokenizer

    def split_arrays(split: str):
        files = hf_split_files(d, split)
        cols = read_parquet(files, ["text", "label"])
        y = np.asarray(cols["label"], dtype=np.int64)
        x = cached_array(d / f"tokens.{split}.{tag}.L{int(max_len)}.npy", lambda: encode(cols["text"]),
                         dtype=_token_dtype(meta["vocab_size"]))
        return torch.from_numpy(x.astype(np.int64)), y

    xtr, ytr = split_arrays("train")
    xte, yte = split_arrays("test")
    tr_pos, val_pos = carve_val(ytr, 0.1 if val_size is None else val_size, split_seed)
    sub_seed = seed if subset_seed is None else subset_seed
    train_idx = tr_pos[train_subset(ytr[tr_pos], train_fraction, per_class, sub_seed)]

    def make(idx, x, y):
        idx_t = torch.from_numpy(idx)
        return TensorSplit(x[idx_t], torch.from_numpy(y[idx]))

    train, val, test = make(train_idx, xtr, ytr), make(val_pos, xtr, ytr), TensorSplit(xte, torch.from_numpy(yte))
    info = {
        "name": name, "kind": "text", "num_classes": _NUM_CLASSES[name], "input_shape": (int(max_len),),
        **meta, "max_len": int(max_len), "source": SOURCES[name].homepage, "root": str(d),
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "subset": {"val_size": len(val), "split_seed": split_seed, "train_fraction": train_fraction,
                   "per_class": per_class, "subset_seed": sub_seed},
    }
    return Splits(train, val, test, info)


# ---------------------------------------------------------------------------------- segmentation


def dominant_class(masks: np.ndarray) -> np.ndarray:
    """Per mask `[N, H, W]`: the object class (1..20) covering most pixels, 0 when none; int64 `[N]`."""
    counts = np.stack([np.bincount(m.ravel(), minlength=256)[1:VOC_CLASSES] for m in masks])  # [N, 20]
    return np.where(counts.max(1) > 0, counts.argmax(1) + 1, 0).astype(np.int64)


def _load_voc(root, mirror, seed: int, size: int = 224, normalize=None, seed_mask_bug: bool = False, val_size=None,
              split_seed: int = 0, train_fraction=None, subset_seed=None) -> Splits:
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size for voc2012 must be an int >= 8 (pixels per side), got {size!r}")
    if not isinstance(seed_mask_bug, bool):
        raise TypeError(f"seed_mask_bug for voc2012 must be true or false, got {seed_mask_bug!r}")
    protocols = NORMALIZE["voc2012"]
    protocol = normalize if normalize is not None else next(iter(protocols))
    if protocol not in protocols:
        raise ValueError(f"normalize for voc2012 must be one of {list(protocols)}, got {protocol!r}")
    mean, std = protocols[protocol]

    d = fetch("voc2012", root, mirror)
    voc = d / "VOCdevkit" / "VOC2012"
    tr = read_voc(voc, "train", size, cache=d / f"segmentation.train.s{size}.npz")
    te = read_voc(voc, "val", size, cache=d / f"segmentation.val.s{size}.npz")
    strata = dominant_class(tr["y"])
    tr_pos, val_pos = carve_val(strata, 0.1 if val_size is None else val_size, split_seed)
    sub_seed = seed if subset_seed is None else subset_seed
    train_idx = tr_pos[train_subset(strata[tr_pos], train_fraction, None, sub_seed)]

    m = torch.tensor(mean).reshape(1, 3, 1, 1)
    s = torch.tensor(std).reshape(1, 3, 1, 1)

    def make(idx: np.ndarray, arrays: dict) -> TensorSplit:
        x = _to_float(arrays["x"][idx]).sub_(m).div_(s)
        mask = torch.from_numpy(np.ascontiguousarray(arrays["y"][idx]))
        # the seed: ToTensor(mask) = mask / 255, then .long() -> 1 only where mask == 255
        y = (mask == VOC_VOID).long() if seed_mask_bug else mask.long()
        return TensorSplit(x, y)

    train, val = make(train_idx, tr), make(val_pos, tr)
    test = make(np.arange(len(te["ids"])), te)
    info = {
        "name": "voc2012", "kind": "segmentation", "num_classes": VOC_CLASSES, "input_shape": (3, size, size),
        "vocab_size": None, "normalisation": {"protocol": protocol, "mean": mean, "std": std},
        "augment": "none", "augment_fill": [-a / b for a, b in zip(mean, std)],
        "ignore_index": None if seed_mask_bug else VOC_VOID,
        "targets": "seed_totensor_bug: 1 where void, else 0" if seed_mask_bug else "class indices 0..20, 255 void",
        "seed_mask_bug": seed_mask_bug, "size": size,
        "source": SOURCES["voc2012"].homepage, "root": str(d),
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "subset": {"val_size": len(val), "split_seed": split_seed, "train_fraction": train_fraction,
                   "subset_seed": sub_seed, "stratified_by": "dominant object class"},
    }
    return Splits(train, val, test, info)
