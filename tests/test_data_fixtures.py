"""Format-faithful miniature datasets for the data tests (real member names, keys and magics)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def real_mirror() -> Path | None:
    """The offline mirror beside the checkout (`<repo>/../shared/datasets`), if present."""
    candidates = [os.environ.get("OPTIREP_DATA_MIRROR"), REPO.parent / "shared" / "datasets", REPO / "shared" / "datasets"]
    for c in candidates:
        if c and (Path(c) / "tinyshakespeare" / "input.txt").is_file() and (Path(c) / "gpt2" / "vocab.json").is_file():
            return Path(c)
    return None


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def image_data(n: int, offset: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """`n` CIFAR rows [n, 3072] whose first two bytes encode a unique id (offset + i); balanced labels."""
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    data[:, 0], data[:, 1] = ids // 256, ids % 256
    labels = [int(i % classes) for i in range(n)]
    return data, labels


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` opcodes, as the real CIFAR batches (pickled by Python 2) do:
    they load as bytes with encoding="bytes" (optirep) and as str with encoding="latin1" (torchvision)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_cifar10(mirror: Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> dict:
    """`<mirror>/cifar10/cifar-10-python.tar.gz` with the real members and b"data"/b"labels" keys."""
    rng = np.random.default_rng(seed)
    out = mirror / "cifar10"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cifar-10-python.tar.gz"
    train_x, train_y = [], []
    with tarfile.open(path, "w:gz") as tar:
        for b in range(1, 6):
            data, labels = image_data(per_batch, (b - 1) * per_batch, 10, rng)
            train_x.append(data)
            train_y += labels
            batch = {b"batch_label": f"training batch {b} of 5".encode(), b"labels": labels, b"data": data,
                     b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]}
            _add(tar, f"cifar-10-batches-py/data_batch_{b}", py2_pickle(batch))
        data, labels = image_data(n_test, 5 * per_batch, 10, rng)
        _add(tar, "cifar-10-batches-py/test_batch",
             py2_pickle({b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data}))
        meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": per_batch, b"num_vis": 3072}
        _add(tar, "cifar-10-batches-py/batches.meta", py2_pickle(meta))
        _add(tar, "cifar-10-batches-py/readme.html", b"<html></html>")
    return {"path": path, "md5": md5(path), "train_x": np.concatenate(train_x), "train_y": np.array(train_y),
            "test_x": data, "test_y": np.array(labels)}


def make_cifar100(mirror: Path, n_train: int = 300, n_test: int = 100, seed: int = 1) -> dict:
    """`<mirror>/cifar100/cifar-100-python.tar.gz` with train/test/meta and b"fine_labels"."""
    rng = np.random.default_rng(seed)
    out = mirror / "cifar100"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cifar-100-python.tar.gz"
    tr, tr_y = image_data(n_train, 0, 100, rng)
    te, te_y = image_data(n_test, n_train, 100, rng)
    with tarfile.open(path, "w:gz") as tar:
        for name, data, fine in (("train", tr, tr_y), ("test", te, te_y)):
            d = {b"filenames": [b"x.png"] * len(fine), b"batch_label": name.encode(), b"fine_labels": fine,
                 b"coarse_labels": [f // 5 for f in fine], b"data": data}
            _add(tar, f"cifar-100-python/{name}", py2_pickle(d))
        _add(tar, "cifar-100-python/meta", py2_pickle({b"fine_label_names": [], b"coarse_label_names": []}))
    return {"path": path, "md5": md5(path), "train_x": tr, "train_y": np.array(tr_y)}


def _idx_bytes(arr: np.ndarray) -> bytes:
    # magic: two zero bytes, dtype code 0x08 (unsigned byte), number of dimensions
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def make_idx(mirror: Path, name: str = "mnist", n_train: int = 60, n_test: int = 20, seed: int = 2,
             form: str = "gz", subdir: str | None = None) -> dict:
    """The four IDX files (magics 2051 images / 2049 labels) under `<mirror>/<subdir or name>/`.

    `form`: "gz" the gzipped files under their official names (their md5 stands for the published
    one), "raw" the decompressed files under the names without `.gz`, "recompressed" gzipped again
    with other settings (other bytes, same content: Debian's copies). Returns the arrays (keyed by
    the official `.gz` names), `md5` (the "published" md5 of the "gz" bytes), `raw_md5` (of the
    decompressed content), both keyed by the official names, and `paths` (the files written).
    """
    rng = np.random.default_rng(seed)
    out = mirror / (subdir or name)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) % 10).astype(np.uint8),
    }
    md5s, raw_md5s, paths = {}, {}, {}
    for fname, arr in arrays.items():
        raw = _idx_bytes(arr)
        published = gzip.compress(raw, compresslevel=9, mtime=0)
        md5s[fname] = hashlib.md5(published).hexdigest()
        raw_md5s[fname] = hashlib.md5(raw).hexdigest()
        if form == "gz":
            path, payload = out / fname, published
        elif form == "raw":
            path, payload = out / fname[:-3], raw
        elif form == "recompressed":
            path, payload = out / fname, gzip.compress(raw, compresslevel=1, mtime=1234567890)
            assert payload != published
        else:
            raise ValueError(f"make_idx: unknown form {form!r}")
        path.write_bytes(payload)
        paths[fname] = path
    return {"arrays": arrays, "md5": md5s, "raw_md5": raw_md5s, "paths": paths}


def voc_palette() -> list[int]:
    """The VOC colour map (768 values): entry i takes its bits 3 at a time into R, G, B, high bit first."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def voc_mask(k: int, height: int, width: int) -> np.ndarray:
    """Background 0; a box of class 1 + k % 20 outlined by a 1-pixel void (255) band, as VOC draws
    object boundaries; a smaller box of the next class; the box sizes differ so each class dominates."""
    m = np.zeros((height, width), dtype=np.uint8)
    c1, c2 = 1 + k % 20, 1 + (k + 1) % 20
    m[3:height - 4, 2:width // 2 + 3] = 255
    m[4:height - 5, 3:width // 2 + 2] = c1
    m[height - 4:height - 1, width - 6:width - 1] = c2
    return m


def make_voc2012(mirror: Path, n_train: int = 12, n_val: int = 4, height: int = 32, width: int = 32,
                 drop: tuple[str, ...] = (), seed: int = 3) -> dict:
    """`<mirror>/voc2012/VOCtrainval_11-May-2012.tar` with the real layout (`VOCdevkit/VOC2012/...`):
    ImageSets/Segmentation/{train,val,trainval}.txt, JPEGImages/<id>.jpg (plus one image outside the
    segmentation lists, as most are), SegmentationClass/<id>.png palette masks. `drop`: members
    (relative to VOC2012/) left out."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = mirror / "voc2012"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "VOCtrainval_11-May-2012.tar"
    ids = {"train": [f"2007_{i:06d}" for i in range(n_train)], "val": [f"2008_{i:06d}" for i in range(n_val)]}
    masks, images = {}, {}
    members: dict[str, bytes] = {}
    for split in ("train", "val"):
        members[f"ImageSets/Segmentation/{split}.txt"] = "".join(f"{i}\n" for i in ids[split]).encode()
    members["ImageSets/Segmentation/trainval.txt"] = members["ImageSets/Segmentation/train.txt"] + \
        members["ImageSets/Segmentation/val.txt"]
    for k, image_id in enumerate(ids["train"] + ids["val"] + ["2011_003276"]):
        img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, format="JPEG", quality=95)
        members[f"JPEGImages/{image_id}.jpg"] = buf.getvalue()
        images[image_id] = buf.getvalue()
        if image_id == "2011_003276":
            continue
        masks[image_id] = voc_mask(k, height, width)
        png = Image.fromarray(masks[image_id], "P")
        png.putpalette(voc_palette())
        buf = io.BytesIO()
        png.save(buf, format="PNG")
        members[f"SegmentationClass/{image_id}.png"] = buf.getvalue()
    with tarfile.open(path, "w") as tar:  # the real file is an uncompressed tar
        for name, payload in members.items():
            if name not in drop:
                _add(tar, f"VOCdevkit/VOC2012/{name}", payload)
    return {"path": path, "md5": md5(path), "ids": ids, "masks": masks, "jpegs": images}


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else []


# ---- the fixtures themselves must match the real formats, checked with torchvision's own readers


def test_idx_fixture_reads_with_torchvision(tmp_path):
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    fx = make_idx(tmp_path)
    for fname, arr in fx["arrays"].items():
        raw = tmp_path / fname.removesuffix(".gz")
        raw.write_bytes(gzip.decompress((tmp_path / "mnist" / fname).read_bytes()))
        np.testing.assert_array_equal(read_sn3_pascalvincent_tensor(str(raw)).numpy(), arr)
    head = gzip.decompress((tmp_path / "mnist" / "train-images-idx3-ubyte.gz").read_bytes())[:4]
    assert struct.unpack(">I", head)[0] == 2051


def test_cifar_fixture_reads_with_torchvision(tmp_path):
    import torchvision

    fx = make_cifar10(tmp_path)
    with tarfile.open(fx["path"]) as tar:
        tar.extractall(tmp_path / "x", filter="data")

    class NoCheck(torchvision.datasets.CIFAR10):
        # the fixture's member md5s are not the real ones
        meta = {**torchvision.datasets.CIFAR10.meta, "md5": md5(tmp_path / "x" / "cifar-10-batches-py" / "batches.meta")}

        def _check_integrity(self):
            return True

    ds = NoCheck(str(tmp_path / "x"), train=True, download=False)
    np.testing.assert_array_equal(ds.data, fx["train_x"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert ds.targets == fx["train_y"].tolist()


def test_voc_fixture_reads_with_torchvision(tmp_path):
    import torchvision

    fx = make_voc2012(tmp_path)
    with tarfile.open(fx["path"]) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    for split in ("train", "val"):
        ds = torchvision.datasets.VOCSegmentation(str(tmp_path / "x"), year="2012", image_set=split, download=False)
        assert len(ds) == len(fx["ids"][split])
        image, target = ds[1]
        assert image.mode == "RGB" and target.mode == "P"
        np.testing.assert_array_equal(np.asarray(target), fx["masks"][fx["ids"][split][1]])
        k = 1 if split == "train" else len(fx["ids"]["train"]) + 1
        assert set(np.unique(np.asarray(target)).tolist()) == {0, 1 + k % 20, 1 + (k + 1) % 20, 255}
    # the palette colours the classes as VOC does: void is cream (224, 224, 192), class 1 dark red
    assert voc_palette()[255 * 3:256 * 3] == [224, 224, 192] and voc_palette()[3:6] == [128, 0, 0]
