"""MNIST and Fashion-MNIST: every accepted mirror form through the real fetch and loader, and the real mirror.

A mirror may hold each official file as the published `.gz` (verified by its published md5), decompressed
under the name without `.gz`, or recompressed (Debian's `dataset-fashion-mnist`); the last two are verified
by the md5 of the decompressed content. The fixtures are small IDX files written by `make_idx`.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from optirep.data import FetchError, fetch, load, override_checksums
from optirep.data import fetch as fetch_mod
from optirep.data.sources import SOURCES
from test_data import _serve
from test_data_fixtures import REPO, files_under, make_idx

IDX = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("OPTIREP_OFFLINE", "1")
    monkeypatch.delenv("OPTIREP_DATA_MIRROR", raising=False)


def _expect(fx):
    return {"md5": fx["md5"], "raw_md5": fx["raw_md5"]}


@pytest.mark.parametrize("form", ["gz", "raw", "recompressed"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_every_mirror_form_fetches_and_loads(tmp_path, offline, name, form):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_idx(mirror, name, form=form)
    with override_checksums(name, **_expect(fx)):
        assert fetch_mod.main([name, "--root", str(root), "--mirror", str(mirror)]) == 0
    # fetched: later loads need neither the mirror nor the override
    s = load(name, root=root, val_size=0, normalize="none")
    np.testing.assert_array_equal(s.train.x[:, 0].mul(255).round().byte().numpy(), fx["arrays"]["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(s.test.y.numpy(), fx["arrays"]["t10k-labels-idx1-ubyte.gz"])
    stored = sorted(p.name for p in files_under(root / name))
    assert stored == sorted([".complete"] + [p.name for p in fx["paths"].values()])


def test_debian_layout_is_a_mirror(tmp_path, offline):
    # apt-get install dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*.gz, recompressed
    mirror, root = tmp_path / "usr-share-datasets", tmp_path / "root"
    fx = make_idx(mirror, "fashion_mnist", form="recompressed", subdir="fashion-mnist")
    with override_checksums("fashion_mnist", **_expect(fx)):
        fetch("fashion_mnist", root, mirror)
    assert load("fashion_mnist", root=root, val_size=0).info["n_test"] == 20


@pytest.mark.parametrize("form", ["gz", "raw", "recompressed"])
def test_altered_file_names_it_and_both_md5_and_leaves_nothing(tmp_path, offline, form):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_idx(mirror, "mnist", form=form)
    bad = fx["paths"]["t10k-images-idx3-ubyte.gz"]  # the third file: two verified ones are installed before it
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with override_checksums("mnist", **_expect(fx)):
        with pytest.raises(FetchError) as err:
            fetch("mnist", root, mirror)
    msg = str(err.value)
    assert f"checksum mismatch for {bad.name}" in msg and str(bad) in msg
    expected = fx["raw_md5"]["t10k-images-idx3-ubyte.gz"]
    assert expected in msg and fx["md5"]["t10k-images-idx3-ubyte.gz"] in msg
    assert files_under(root) == [] and not (root / "mnist").exists()


def test_truncated_gz_is_an_error_naming_the_stream(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_idx(mirror, "fashion_mnist", form="recompressed")
    path = fx["paths"]["train-labels-idx1-ubyte.gz"]
    path.write_bytes(path.read_bytes()[:-20])
    with override_checksums("fashion_mnist", **_expect(fx)):
        with pytest.raises(FetchError, match=r"train-labels-idx1-ubyte\.gz .*decompressed md5 none: not a complete gzip stream"):
            fetch("fashion_mnist", root, mirror)
    assert files_under(root) == []


def test_download_accepts_only_the_published_gz(tmp_path, monkeypatch):
    """A served file with the right content but other gzip bytes is rejected: downloads check the published md5."""
    monkeypatch.setenv("OPTIREP_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("OPTIREP_DATA_MIRROR", raising=False)
    served = tmp_path / "served"
    fx = make_idx(served, "mnist", form="recompressed")
    server = _serve(served / "mnist")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        files = tuple(dataclasses.replace(f, urls=(base + f.name,), md5=fx["md5"][f.name], raw_md5=fx["raw_md5"][f.name])
                      for f in SOURCES["mnist"].files)
        monkeypatch.setitem(SOURCES, "mnist", dataclasses.replace(SOURCES["mnist"], files=files))
        with pytest.raises(FetchError, match=rf"checksum mismatch for train-images-idx3-ubyte\.gz .*expected {fx['md5'][IDX[0]]}"):
            fetch("mnist", tmp_path / "root")
    finally:
        server.shutdown()
    assert files_under(tmp_path / "root") == []


def test_missing_file_says_every_accepted_form(tmp_path, offline):
    with pytest.raises(FetchError) as err:
        fetch("mnist", tmp_path / "root", tmp_path / "mirror")
    msg = str(err.value)
    assert "the decompressed train-images-idx3-ubyte (md5 6bbc9ace898e44ae57da46a324031adb)" in msg
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg


# ------------------------------------------------------------------------------------------ the real mirror

SHARED = REPO.parent / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir() or not (SHARED / "fashion_mnist").is_dir(),
                                  reason=f"the offline mirror {SHARED} is absent")

#: per-class counts of the official training labels, and the first ten labels of train and test
REAL = {
    "mnist": ([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
              [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
    "fashion_mnist": ([6000] * 10, [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]),
}


@pytest.fixture(scope="session")
def real_root(tmp_path_factory):
    """Both datasets fetched once from the real mirror (verified by the registry's own md5s)."""
    root = tmp_path_factory.mktemp("real-data")
    for name in REAL:
        assert fetch_mod.main([name, "--root", str(root), "--mirror", str(SHARED)]) == 0
    return root


@needs_shared
@pytest.mark.parametrize("name", list(REAL))
def test_real_mirror_class_counts_and_first_labels(real_root, name):
    counts, first_train, first_test = REAL[name]
    s = load(name, root=real_root, val_size=0, normalize="none")
    assert len(s.train) == 60000 and len(s.test) == 10000 and tuple(s.train.x.shape[1:]) == (1, 28, 28)
    assert np.bincount(s.train.y.numpy(), minlength=10).tolist() == counts
    assert s.train.y[:10].tolist() == first_train and s.test.y[:10].tolist() == first_test
    assert np.bincount(s.test.y.numpy(), minlength=10).sum() == 10000


@needs_shared
@pytest.mark.parametrize("name", list(REAL))
def test_real_mirror_byte_altered_copy_is_rejected(tmp_path, offline, name):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    shutil.copytree(SHARED / name, mirror / name)
    label = mirror / name / "t10k-labels-idx1-ubyte"
    label.chmod(0o644)
    data = bytearray(label.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # one test label changed: still a valid IDX file
    label.write_bytes(bytes(data))
    with pytest.raises(FetchError, match=r"checksum mismatch for t10k-labels-idx1-ubyte .*expected "
                                         + SOURCES[name].files[3].raw_md5):
        fetch(name, root, mirror)
    assert files_under(root) == []


@needs_shared
def test_padded_three_channel_view_of_the_real_images(real_root):
    """The V6 proxy's input: 28x28 padded with black to 32x32, grey replicated to 3 channels, then normalised."""
    s = load("fashion_mnist", root=real_root, val_size=0, pad=2, channels=3, test_size=50, augment=True)
    plain = load("fashion_mnist", root=real_root, val_size=0, test_size=50)
    assert tuple(s.test.x.shape) == (50, 3, 32, 32) and len(s.train) == 60000
    assert bool((s.test.x[:, :, :2] == -1.0).all()) and bool((s.test.x[:, 0] == s.test.x[:, 2]).all())
    assert bool((s.test.x[:, 1, 2:30, 2:30] == plain.test.x[:, 0]).all())
    assert s.info["augment"] == "crop_flip" and s.info["augment_fill"] == [-1.0, -1.0, -1.0]
    with pytest.raises(ValueError, match=r"augment=True is only defined for .*not fashion_mnist with pad 0"):
        load("fashion_mnist", root=real_root, augment=True)
    with pytest.raises(ValueError, match=r"channels for fashion_mnist must be 1 or 3, got 2"):
        load("fashion_mnist", root=real_root, channels=2)
