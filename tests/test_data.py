"""Fetching and the image/vector loaders, driven through the real code with format-faithful fixtures."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading

import numpy as np
import pytest
import torch

from optirep.data import FetchError, fetch, load, override_checksums
from optirep.data import fetch as fetch_mod
from optirep.data.sources import SOURCES
from test_data_fixtures import files_under, make_cifar10, make_cifar100, make_idx


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("OPTIREP_OFFLINE", "1")
    monkeypatch.delenv("OPTIREP_DATA_MIRROR", raising=False)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv("OPTIREP_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("OPTIREP_DATA_MIRROR", raising=False)


def test_cifar10_from_mirror_loads_real_layout(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_cifar10(mirror)
    with override_checksums("cifar10", {"cifar-10-python.tar.gz": fx["md5"]}):
        s = load("cifar10", root=root, mirror=mirror, val_size=0)
    assert (root / "cifar10" / ".complete").is_file()
    assert (root / "cifar10" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert s.train.x.shape == (100, 3, 32, 32) and s.train.x.dtype == torch.float32
    assert s.test.x.shape == (20, 3, 32, 32) and s.train.y.dtype == torch.long
    # CIFAR rows are 1024 R, 1024 G, 1024 B values, row-major; V6 normalisation mean = std = 0.5
    raw = fx["train_x"].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    np.testing.assert_allclose(s.train.x.numpy(), (raw - 0.5) / 0.5, atol=1e-6)
    np.testing.assert_array_equal(s.train.y.numpy(), fx["train_y"])
    assert s.info["num_classes"] == 10 and s.info["input_shape"] == (3, 32, 32) and s.info["kind"] == "image"
    assert s.info["augment"] == "crop_flip" and s.info["augment_fill"] == [-1.0, -1.0, -1.0]
    x, y = s.train[3]
    assert x.shape == (3, 32, 32) and int(y) == fx["train_y"][3]


def test_cifar10_grn_normalisation_and_no_refetch(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_cifar10(mirror)
    with override_checksums("cifar10", {"cifar-10-python.tar.gz": fx["md5"]}):
        fetch("cifar10", root, mirror)
    # complete: later loads need neither the mirror nor the override
    s = load("cifar10", root=root, val_size=0, normalize="grn", augment=False)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).reshape(1, 3, 1, 1)
    raw = torch.from_numpy(fx["test_x"].reshape(-1, 3, 32, 32)).float() / 255
    torch.testing.assert_close(s.test.x, (raw - mean) / std)
    assert s.info["augment"] == "none" and s.info["normalisation"]["protocol"] == "grn"
    with pytest.raises(ValueError, match=r"normalize for cifar10 must be one of \['v6', 'grn', 'none'\]"):
        load("cifar10", root=root, normalize="imagenet")


def test_cifar100_fine_labels_and_v6_stats(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_cifar100(mirror)
    with override_checksums("cifar100", {"cifar-100-python.tar.gz": fx["md5"]}):
        s = load("cifar100", root=root, mirror=mirror, val_size=0)
    np.testing.assert_array_equal(s.train.y.numpy(), fx["train_y"])
    assert s.info["num_classes"] == 100 and int(s.train.y.max()) == 99
    m, sd = s.info["normalisation"]["mean"], s.info["normalisation"]["std"]
    assert m == (0.5071, 0.4867, 0.4408) and sd == (0.2675, 0.2565, 0.2761)
    raw = fx["train_x"][0].reshape(3, 32, 32).astype(np.float32) / 255
    np.testing.assert_allclose(s.train.x[0, 2].numpy(), (raw[2] - m[2]) / sd[2], atol=1e-5)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_from_mirror_both_protocols(tmp_path, offline, name):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_idx(mirror, name)
    with override_checksums(name, fx["md5"]):
        np_ = load(name, root=root, mirror=mirror, val_size=0)
    grn = load(name, root=root, val_size=0, normalize="grn")
    raw = torch.from_numpy(fx["arrays"]["train-images-idx3-ubyte.gz"]).float()[:, None] / 255
    torch.testing.assert_close(np_.train.x, (raw - 0.5) / 0.5)
    torch.testing.assert_close(grn.train.x, (raw - 0.1307) / 0.3081)
    assert np_.train.x.shape == (60, 1, 28, 28) and np_.test.x.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(np_.test.y.numpy(), fx["arrays"]["t10k-labels-idx1-ubyte.gz"])
    assert np_.info["normalisation"]["protocol"] == "neuroplastic" and np_.info["augment"] == "none"


def test_checksum_mismatch_names_file_and_leaves_nothing(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    make_cifar10(mirror)  # registry keeps the real md5, which the fixture cannot match
    with pytest.raises(FetchError, match=r"checksum mismatch for cifar-10-python\.tar\.gz.*expected c58f30108f718f92721af3b95e74349a"):
        fetch("cifar10", root, mirror)
    assert files_under(root) == []
    assert not (root / "cifar10").exists()


def test_truncated_tarball_is_an_error_and_not_marked_done(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_cifar10(mirror)
    data = fx["path"].read_bytes()
    fx["path"].write_bytes(data[: len(data) // 2])
    from test_data_fixtures import md5

    with override_checksums("cifar10", {"cifar-10-python.tar.gz": md5(fx["path"])}):
        with pytest.raises(FetchError, match=r"cifar-10-python\.tar\.gz is truncated or corrupt"):
            fetch("cifar10", root, mirror)
        assert files_under(root) == []
        # a rerun does not take anything as done: it fails the same way
        with pytest.raises(FetchError, match="truncated or corrupt"):
            load("cifar10", root=root, mirror=mirror)


def test_archive_missing_member_is_an_error(tmp_path, offline):
    import tarfile

    mirror, root = tmp_path / "mirror", tmp_path / "root"
    (mirror / "cifar100").mkdir(parents=True)
    path = mirror / "cifar100" / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(__file__, arcname="cifar-100-python/train")
    from test_data_fixtures import md5

    with override_checksums("cifar100", {"cifar-100-python.tar.gz": md5(path)}):
        with pytest.raises(FetchError, match=r"lacks \['cifar-100-python/test', 'cifar-100-python/meta'\]"):
            fetch("cifar100", root, mirror)
    assert not (root / "cifar100" / ".complete").exists()


def test_offline_missing_says_which_file_where(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    mirror.mkdir()
    with pytest.raises(FetchError) as err:
        fetch("mnist", root, mirror)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg
    assert str(mirror / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert str(root / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert files_under(root) == []
    # without any mirror the message still says where a mirror file would go
    with pytest.raises(FetchError, match=r"<mirror>/cifar10/cifar-10-python\.tar\.gz \(and pass --mirror"):
        fetch("cifar10", root)


def test_hf_offline_missing_names_parquet_files(tmp_path, offline):
    with pytest.raises(FetchError, match=r"<mirror>/ag_news/train-00000-of-00001\.parquet"):
        fetch("ag_news", tmp_path / "root")
    assert files_under(tmp_path / "root") == []


def _serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_over_http_verifies_and_falls_back(tmp_path, online, monkeypatch):
    """The download path (urllib, progress bar, temp file, verify, rename) against a local server."""
    served = tmp_path / "served"
    fx = make_idx(served, "mnist")
    server = _serve(served / "mnist")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        files = tuple(dataclasses.replace(f, urls=("http://127.0.0.1:9/" + f.name, base + f.name), md5=fx["md5"][f.name])
                      for f in SOURCES["mnist"].files)
        monkeypatch.setitem(SOURCES, "mnist", dataclasses.replace(SOURCES["mnist"], files=files))
        d = fetch("mnist", tmp_path / "root")
    finally:
        server.shutdown()
    assert sorted(p.name for p in files_under(d)) == sorted([".complete", *fx["md5"]])
    assert load("mnist", root=tmp_path / "root").info["n_test"] == 20


def test_download_failure_says_where_to_place(tmp_path, online, monkeypatch):
    f0 = dataclasses.replace(SOURCES["tinyshakespeare"].files[0], urls=("http://127.0.0.1:9/input.txt",))
    monkeypatch.setitem(SOURCES, "tinyshakespeare", dataclasses.replace(SOURCES["tinyshakespeare"], files=(f0,)))
    with pytest.raises(FetchError, match=r"could not download input\.txt .*place input\.txt .* at <mirror>/tinyshakespeare/input\.txt"):
        fetch("tinyshakespeare", tmp_path / "root")
    assert files_under(tmp_path / "root") == []


def test_existing_corrupt_file_is_reported_not_trusted(tmp_path, offline):
    root = tmp_path / "root"
    (root / "tinyshakespeare").mkdir(parents=True)
    (root / "tinyshakespeare" / "input.txt").write_text("not shakespeare")
    with pytest.raises(FetchError, match=r"existing .*input\.txt fails verification \(checksum mismatch"):
        fetch("tinyshakespeare", root)
    assert not (root / "tinyshakespeare" / ".complete").exists()


def test_cli_main_exit_codes(tmp_path, offline, capsys):
    mirror = tmp_path / "mirror"
    fx = make_idx(mirror, "fashion_mnist")
    assert fetch_mod.main(["fashion_mnist", "--root", str(tmp_path / "r"), "--mirror", str(mirror)]) == 1
    assert "checksum mismatch for train-images-idx3-ubyte.gz" in capsys.readouterr().err
    with override_checksums("fashion_mnist", fx["md5"]):
        assert fetch_mod.main(["fashion_mnist", "--root", str(tmp_path / "r"), "--mirror", str(mirror)]) == 0
    assert fetch_mod.main(["digits32"]) == 0
    assert fetch_mod.main(["imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err


def test_mirror_from_environment(tmp_path, offline, monkeypatch):
    mirror = tmp_path / "mirror"
    fx = make_idx(mirror, "mnist")
    monkeypatch.setenv("OPTIREP_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("OPTIREP_DATA", str(tmp_path / "envroot"))
    with override_checksums("mnist", fx["md5"]):
        s = load("mnist")
    assert (tmp_path / "envroot" / "mnist" / ".complete").is_file() and len(s.test) == 20


def test_unknown_names_and_args_are_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown dataset 'cifar11'"):
        load("cifar11")
    with pytest.raises(TypeError, match=r"unknown data_args \['batch'\]; accepted: .*'train_fraction'"):
        load("digits8", batch=3)
    with pytest.raises(KeyError, match=r"override_checksums\('mnist'\): unknown files \['x.gz'\]"):
        with override_checksums("mnist", {"x.gz": "0"}):
            pass
