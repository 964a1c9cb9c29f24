"""Pascal VOC 2012 segmentation: `optirep fetch voc2012 --mirror`, the tarball's checks and the loader,
driven through the real code on a format-faithful tarball the tests write (real member names,
palette PNG masks with class indices and void 255 borders)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from optirep import cli
from optirep.data import FetchError, fetch, load, override_checksums
from optirep.data.formats import FormatError
from test_data_fixtures import files_under, make_voc2012, md5, voc_palette

TAR = "VOCtrainval_11-May-2012.tar"
REAL_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("OPTIREP_OFFLINE", "1")
    monkeypatch.delenv("OPTIREP_DATA_MIRROR", raising=False)


@pytest.fixture
def voc(tmp_path, offline):
    """A fetched fixture: (mirror, root, fixture dict); later loads need neither mirror nor override."""
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_voc2012(mirror)
    with override_checksums("voc2012", {TAR: fx["md5"]}):
        assert cli.main(["fetch", "voc2012", "--root", str(root), "--mirror", str(mirror)]) == 0
    return mirror, root, fx


def _normalised(jpeg: bytes) -> torch.Tensor:
    rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
    return torch.from_numpy((rgb - mean) / std)


def test_fetch_from_mirror_and_masks_keep_class_indices_and_void(voc):
    _, root, fx = voc
    devkit = root / "voc2012" / "VOCdevkit" / "VOC2012"
    assert (root / "voc2012" / ".complete").is_file() and (devkit / "ImageSets/Segmentation/train.txt").is_file()
    s = load("voc2012", root=root, val_size=0, size=32)  # the fixture is 32x32: resizing is the identity
    assert s.train.x.shape == (12, 3, 32, 32) and s.train.x.dtype == torch.float32
    assert s.train.y.shape == (12, 32, 32) and s.train.y.dtype == torch.long
    # train in list order (val_size 0), test = the official val list
    want_train = np.stack([fx["masks"][i] for i in fx["ids"]["train"]])
    np.testing.assert_array_equal(s.train.y.numpy(), want_train)
    np.testing.assert_array_equal(s.test.y.numpy(), np.stack([fx["masks"][i] for i in fx["ids"]["val"]]))
    values = set(torch.unique(torch.cat([s.train.y.flatten(), s.test.y.flatten()])).tolist())
    assert 255 in values and 0 in values and len(values - {0, 255}) >= 10 and max(values - {255}) <= 20
    torch.testing.assert_close(s.test.x[2], _normalised(fx["jpegs"][fx["ids"]["val"][2]]))
    info = s.info
    assert info["kind"] == "segmentation" and info["num_classes"] == 21 and info["ignore_index"] == 255
    assert info["input_shape"] == (3, 32, 32) and info["n_test"] == 4
    assert info["normalisation"]["protocol"] == "imagenet"


def test_resize_is_nearest_for_masks_and_cached_once_per_size(voc):
    _, root, fx = voc
    for size in (16, 48):
        s = load("voc2012", root=root, val_size=0, size=size)
        assert s.train.x.shape == (12, 3, size, size) and s.test.y.shape == (4, size, size)
        for k, image_id in enumerate(fx["ids"]["train"]):
            # nearest: no value that the mask does not hold (bilinear would invent in-between ids)
            assert set(s.train.y[k].unique().tolist()) <= set(np.unique(fx["masks"][image_id]).tolist())
        assert (root / "voc2012" / f"segmentation.train.s{size}.npz").is_file()
    # epochs and later runs read the arrays, not the JPEGs
    for p in (root / "voc2012" / "VOCdevkit" / "VOC2012" / "JPEGImages").iterdir():
        p.unlink()
    again = load("voc2012", root=root, val_size=0, size=48)
    torch.testing.assert_close(again.train.x, s.train.x)


def test_seed_mask_bug_maps_targets_like_the_seed(voc):
    _, root, _ = voc
    good = load("voc2012", root=root, size=32)
    bug = load("voc2012", root=root, size=32, seed_mask_bug=True)
    # ToTensor(mask) = mask / 255 -> long: classes 0..20 -> 0, void 255 -> 1
    for split in ("train", "val", "test"):
        torch.testing.assert_close(getattr(bug, split).y, (getattr(good, split).y == 255).long())
        torch.testing.assert_close(getattr(bug, split).x, getattr(good, split).x)
    assert set(bug.train.y.unique().tolist()) == {0, 1}
    assert bug.info["ignore_index"] is None and bug.info["seed_mask_bug"] is True
    assert "seed_totensor_bug" in bug.info["targets"]


def test_validation_and_subset_are_carved_from_train_deterministically(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_voc2012(mirror, n_train=80)  # each of the 20 dominant classes 4 times
    with override_checksums("voc2012", {TAR: fx["md5"]}):
        fetch("voc2012", root, mirror)
    a = load("voc2012", root=root, size=32, val_size=0.25, train_fraction=0.5, seed=1)
    b = load("voc2012", root=root, size=32, val_size=0.25, train_fraction=0.5, seed=1)
    # 20 validation images, one per dominant class; then half of the 3 left per class, rounded
    assert (a.info["n_train"], a.info["n_val"], a.info["n_test"]) == (b.info["n_train"], 20, 4)
    assert a.info["n_train"] == 40 and a.info["subset"]["subset_seed"] == 1
    torch.testing.assert_close(a.train.y, b.train.y)
    torch.testing.assert_close(a.val.y, b.val.y)
    # validation masks are train-list masks, never the test (official val) ones
    train_masks = {fx["masks"][i].tobytes() for i in fx["ids"]["train"]}
    assert all(m.numpy().astype(np.uint8).tobytes() in train_masks for m in a.val.y)
    other = load("voc2012", root=root, size=32, val_size=0.25, split_seed=1)
    assert not torch.equal(other.val.y, a.val.y)


def test_bad_data_args_name_the_arg_and_allowed_values(voc):
    _, root, _ = voc
    with pytest.raises(ValueError, match=r"normalize for voc2012 must be one of \['imagenet', 'none'\], got 'grn'"):
        load("voc2012", root=root, normalize="grn")
    with pytest.raises(ValueError, match=r"size for voc2012 must be an int >= 8"):
        load("voc2012", root=root, size="224")
    with pytest.raises(TypeError, match=r"seed_mask_bug for voc2012 must be true or false"):
        load("voc2012", root=root, seed_mask_bug="yes")
    with pytest.raises(TypeError, match=r"unknown data_args \['per_class'\]; accepted: .*seed_mask_bug"):
        load("voc2012", root=root, per_class=2)


def test_truncated_tarball_names_the_file_and_leaves_nothing(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_voc2012(mirror)
    with tarfile.open(fx["path"]) as tar:
        jpeg = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    data = fx["path"].read_bytes()
    fx["path"].write_bytes(data[: jpeg.offset_data + jpeg.size // 2])  # cut inside an image
    with override_checksums("voc2012", {TAR: md5(fx["path"])}):
        with pytest.raises(FetchError, match=rf"voc2012: {TAR} is truncated or corrupt .*removed it, fetch again"):
            fetch("voc2012", root, mirror)
        assert files_under(root) == []
        with pytest.raises(FetchError, match="truncated or corrupt"):  # nothing was taken as done
            load("voc2012", root=root, mirror=mirror)
    assert files_under(root) == []


def test_tarball_missing_a_listed_image_is_incomplete(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    fx = make_voc2012(mirror, drop=("JPEGImages/2007_000003.jpg",))
    with override_checksums("voc2012", {TAR: fx["md5"]}):
        with pytest.raises(FetchError, match=rf"{TAR} is incomplete \(1 files listed in ImageSets/Segmentation/"
                                             r"train\.txt are missing, "
                                             r"e\.g\. \['VOCdevkit/VOC2012/JPEGImages/2007_000003\.jpg'\]\)"):
            fetch("voc2012", root, mirror)
    assert files_under(root) == []
    # a tarball without the segmentation lists fails on the member check
    fx = make_voc2012(mirror, drop=("ImageSets/Segmentation/val.txt",))
    with override_checksums("voc2012", {TAR: fx["md5"]}):
        with pytest.raises(FetchError, match=r"lacks \['VOCdevkit/VOC2012/ImageSets/Segmentation/val\.txt'\]"):
            fetch("voc2012", root, mirror)
    assert files_under(root) == []


def test_real_checksum_is_expected_without_an_override(tmp_path, offline):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    make_voc2012(mirror)
    with pytest.raises(FetchError, match=rf"checksum mismatch for {TAR} .*expected {REAL_MD5}"):
        fetch("voc2012", root, mirror)
    assert files_under(root) == []


def test_offline_missing_tarball_says_where_to_place_it(tmp_path, offline, capsys):
    mirror, root = tmp_path / "mirror", tmp_path / "root"
    mirror.mkdir()
    with pytest.raises(FetchError) as err:
        fetch("voc2012", root, mirror)
    msg = str(err.value)
    assert str(mirror / "voc2012" / TAR) in msg and str(root / "voc2012" / TAR) in msg
    assert REAL_MD5 in msg and "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/" + TAR in msg
    assert files_under(root) == []
    assert cli.main(["fetch", "voc2012", "--root", str(root)]) == 1
    assert f"<mirror>/voc2012/{TAR} (and pass --mirror" in capsys.readouterr().err


def test_unreadable_image_or_bad_mask_names_the_file_and_writes_no_cache(voc):
    _, root, fx = voc
    devkit = root / "voc2012" / "VOCdevkit" / "VOC2012"
    image_id = fx["ids"]["train"][5]
    jpg = devkit / "JPEGImages" / f"{image_id}.jpg"
    good = jpg.read_bytes()
    jpg.write_bytes(good[: len(good) // 3])  # a truncated JPEG
    with pytest.raises(FormatError, match=rf"{jpg}: not a readable JPEG"):
        load("voc2012", root=root, size=32)
    jpg.write_bytes(good)
    png = devkit / "SegmentationClass" / f"{image_id}.png"
    m = fx["masks"][image_id].copy()
    m[0, 0] = 50
    img = Image.fromarray(m, "P")
    img.putpalette(voc_palette())
    img.save(png)
    with pytest.raises(FormatError, match=rf"{png}: values \[50\] are neither classes 0\.\.20 nor void 255"):
        load("voc2012", root=root, size=32)
    Image.fromarray(np.stack([m] * 3, -1), "RGB").save(png)  # a colour-coded mask instead of indices
    with pytest.raises(FormatError, match=rf"{png}: mode 'RGB', expected a palette \('P'\) PNG"):
        load("voc2012", root=root, size=32)
    assert not [p for p in files_under(root / "voc2012") if "segmentation." in p.name]
