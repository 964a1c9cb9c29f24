"""Readers for each on-disk format, returning numpy arrays (no normalisation, no splitting)."""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import random
from pathlib import Path

import numpy as np

__all__ = ["read_cifar", "read_idx", "read_parquet", "digits", "mnist1d", "read_voc", "voc_ids", "voc_pair"]

CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"],
                ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


class FormatError(ValueError):
    """A file has the right name but not the expected format."""


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise FormatError(f"{path}: not a CIFAR python pickle ({exc})") from None


def read_cifar(directory: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR python-version batches: uint8 `[N, 3, 32, 32]` images and int64 labels.

    `directory` is `<root>/<name>` (holding the extracted member folder); `split` "train"/"test".
    CIFAR-100 uses the 100 fine labels.
    """
    member, train, test, key = CIFAR_FILES[name]
    xs, ys = [], []
    for fname in train if split == "train" else test:
        batch = _unpickle(directory / member / fname)
        if b"data" not in batch or key not in batch:
            raise FormatError(f"{directory / member / fname}: expected keys b'data' and {key!r}, got {sorted(batch)}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise FormatError(f"{directory / member / fname}: b'data' has shape {data.shape}, expected [N, 3072]")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed or not): images `[N, 28, 28]` or labels `[N]`, as stored."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise FormatError(f"{path}: unreadable ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise FormatError(f"{path}: bad IDX magic number {raw[:4].hex()}")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    n = int(np.prod(dims))
    offset = 4 + 4 * ndim
    if len(raw) - offset != n * dtype.itemsize:
        raise FormatError(f"{path}: header says {tuple(dims)} ({n * dtype.itemsize} bytes), file has {len(raw) - offset}")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(tuple(dims)).astype(dtype.newbyteorder("="))


def read_parquet(files: list[Path], columns: list[str]) -> dict[str, list]:
    """The given columns of parquet shards, concatenated in shard order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(p, columns=columns) for p in files])
    return {c: table.column(c).to_pylist() for c in columns}


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits: float32 `[N, 8, 8]` in 0..16 and int64 labels (read-only).

    Reads the `digits.csv.gz` that ships inside scikit-learn directly (what `load_digits` reads),
    because importing `sklearn.datasets` takes seconds; falls back to `load_digits` if the file moved.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",", dtype=np.float32)  # [1797, 64 pixels + label]
        x, y = table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = d.images.astype(np.float32), d.target.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False  # shared by every caller through the cache
    return x, y


MNIST1D_SEED = 42


def mnist1d(cache: Path | None = None) -> dict[str, np.ndarray]:
    """MNIST-1D generated offline (`make_dataset(get_dataset_args())`, the package's seed 42).

    Returns x `[4000, 40]`, y, x_test `[1000, 40]`, y_test, the package's standard benchmark
    split. Generation takes seconds (mostly importing scipy), so the arrays are kept in `cache`
    (an .npz path) when given. `make_dataset` reseeds `random` and `numpy.random` globally;
    their states are restored.
    """
    keys = ("x", "y", "x_test", "y_test")
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in keys}
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = MNIST1D_SEED
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    out = {k: np.asarray(d[k]) for k in keys}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        from optirep.data.fetch import clean_stale_parts, owner_tag

        clean_stale_parts(cache.parent)  # a killed writer's temp file
        tmp = cache.with_name(f".{cache.name}.{owner_tag()}.part")
        with open(tmp, "wb") as f:
            np.savez(f, **out)
        os.replace(tmp, cache)
    return out


# Pascal VOC 2012 as laid out in VOCtrainval_11-May-2012.tar (`VOCdevkit/VOC2012/...`).
VOC_SPLITS = ("train", "val")
VOC_CLASSES = 21  # background + 20 object classes
VOC_VOID = 255  # object boundaries and "difficult" regions


def voc_ids(voc: Path, split: str) -> list[str]:
    """Image ids of `<voc>/ImageSets/Segmentation/<split>.txt` (1464 train, 1449 val)."""
    path = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    try:
        ids = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: unreadable ({exc})") from None
    if not ids:
        raise FormatError(f"{path}: lists no image id")
    return ids


def voc_pair(voc: Path, image_id: str) -> tuple[Path, Path]:
    """(`JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png`) under `voc`."""
    return voc / "JPEGImages" / f"{image_id}.jpg", voc / "SegmentationClass" / f"{image_id}.png"


def _voc_example(jpg: Path, png: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One resized image (uint8 [3, S, S]) and mask (uint8 [S, S] of class indices, 255 void)."""
    from PIL import Image

    try:
        with Image.open(jpg) as im:
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        raise FormatError(f"{jpg}: not a readable JPEG ({exc})") from None
    try:
        with Image.open(png) as im:
            im.load()
            mask = im.copy()
    except (OSError, SyntaxError, ValueError) as exc:
        raise FormatError(f"{png}: not a readable PNG ({exc})") from None
    # The pixel values of a palette PNG are the class indices (the palette only colours them).
    if mask.mode not in ("P", "L"):
        raise FormatError(f"{png}: mode {mask.mode!r}, expected a palette ('P') PNG whose values are class indices")
    if mask.size != rgb.size:
        raise FormatError(f"{png}: mask is {mask.size[0]}x{mask.size[1]} but {jpg.name} is {rgb.size[0]}x{rgb.size[1]}")
    values = np.unique(np.asarray(mask))
    bad = values[(values >= VOC_CLASSES) & (values != VOC_VOID)]
    if len(bad):
        raise FormatError(f"{png}: values {bad.tolist()} are neither classes 0..{VOC_CLASSES - 1} nor void {VOC_VOID}")
    # The seed's transforms: Resize((S, S)) bilinear for the image, nearest for the mask (PIL's own
    # resize, as torchvision's Resize does on PIL images); the aspect ratio is not kept.
    x = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8).transpose(2, 0, 1)
    y = np.asarray(mask.resize((size, size), Image.Resampling.NEAREST), dtype=np.uint8)
    return x, y


def read_voc(voc: Path, split: str, size: int, cache: Path | None = None) -> dict[str, np.ndarray]:
    """One VOC 2012 segmentation split, resized to `size` x `size`, decoded once.

    Returns `x` uint8 `[N, 3, S, S]` (RGB), `y` uint8 `[N, S, S]` (class indices 0..20, 255 void),
    `ids` `[N]` in the list's order. `voc` is the extracted `VOCdevkit/VOC2012`; `split` "train" or
    "val". With `cache` (an .npz path) the arrays are read from it when present, else computed and
    written there atomically (temp + rename), so a failure leaves no cache behind.
    """
    if split not in VOC_SPLITS:
        raise ValueError(f"read_voc: split must be one of {list(VOC_SPLITS)}, got {split!r}")
    keys = ("x", "y", "ids")
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            if set(keys) - set(z.files):
                raise FormatError(f"{cache}: expected arrays {list(keys)}, got {z.files}; delete it to rebuild")
            return {k: z[k] for k in keys}
    ids = voc_ids(voc, split)
    x = np.empty((len(ids), 3, size, size), dtype=np.uint8)
    y = np.empty((len(ids), size, size), dtype=np.uint8)
    for n, image_id in enumerate(ids):
        x[n], y[n] = _voc_example(*voc_pair(voc, image_id), size)
    out = {"x": x, "y": y, "ids": np.asarray(ids)}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        from optirep.data.fetch import clean_stale_parts, owner_tag

        clean_stale_parts(cache.parent)  # a killed writer's temp file
        tmp = cache.with_name(f".{cache.name}.{owner_tag()}.part")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **out)
            os.replace(tmp, cache)
        finally:
            tmp.unlink(missing_ok=True)
    return out
