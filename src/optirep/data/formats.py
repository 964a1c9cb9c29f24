"""Readers for each on-disk format, returning numpy arrays (no normalisation, no splitting)."""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import random
from pathlib import Path

import numpy as np

__all__ = ["read_cifar", "read_idx", "read_parquet", "digits", "mnist1d"]

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
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.part")
        with open(tmp, "wb") as f:
            np.savez(f, **out)
        os.replace(tmp, cache)
    return out
