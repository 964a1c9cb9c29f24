"""The one training command on Pascal VOC segmentation (FCN-ResNet50, the GRN protocol), through the
real fetch and loader on a tarball fixture; the segmentation metrics checked by hand."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from optirep import cli, config
from optirep.data import override_checksums
from optirep.data.splits import Splits, TensorSplit
from optirep.train import Segmentation
from test_data_fixtures import make_voc2012

TAR = "VOCtrainval_11-May-2012.tar"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("OPTIREP_OFFLINE", "1")
    monkeypatch.delenv("OPTIREP_DATA_MIRROR", raising=False)


# ----------------------------------------------------------------------------- metrics by hand
class Fixed(nn.Module):
    """Predicts `pred` [H, W] for every image: logits 5 on the predicted class, 0 elsewhere."""

    def __init__(self, pred: torch.Tensor, classes: int = 21):
        super().__init__()
        self.register_buffer("logits", 5.0 * F.one_hot(pred, classes).permute(2, 0, 1).float())

    def forward(self, x):
        return self.logits.expand(len(x), -1, -1, -1)


def _objective(y: torch.Tensor, ignore_index, metric="pixel_accuracy") -> Segmentation:
    split = TensorSplit(torch.zeros(len(y), 3, *y.shape[1:]), y)
    splits = Splits(split, split, split, {"num_classes": 21, "ignore_index": ignore_index})
    return Segmentation({"batch_size": 1, "metric": metric}, splits, torch.device("cpu"), seed=0)


def test_pixel_accuracy_and_miou_ignore_void_pixels():
    y = torch.tensor([[[0, 1, 255], [1, 2, 2]]])
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    model = Fixed(pred)
    out = _objective(y, 255).evaluate(model, "test")
    # 5 labelled pixels, 3 right; IoU: class 0 1/2, class 1 1/2 (the void pixel predicted 1 counts
    # nowhere), class 2 1/3; the 18 classes in neither targets nor predictions are left out
    assert out["pixel_accuracy"] == pytest.approx(3 / 5) and out["metric"] == out["pixel_accuracy"]
    assert out["miou"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3) and out["classes_present"] == 3
    assert _objective(y, 255, metric="miou").evaluate(model, "test")["metric"] == pytest.approx(4 / 9)
    ce = F.cross_entropy(model(y), y, ignore_index=255)
    assert out["loss"] == pytest.approx(float(ce))
    assert float(_objective(y, 255).loss(model, (torch.zeros(1, 3, 2, 3), y))) == pytest.approx(float(ce))
    # an all-void batch: a zero loss, not NaN
    void = torch.full_like(y, 255)
    assert float(_objective(void, 255).loss(model, (torch.zeros(1, 3, 2, 3), void))) == 0.0


def test_seed_mask_bug_targets_count_every_pixel():
    y = torch.tensor([[[0, 0, 1], [0, 1, 1]]])  # the seed's {0, 1} targets: 1 where the mask was void
    pred = torch.tensor([[0, 1, 1], [0, 0, 1]])
    out = _objective(y, None).evaluate(Fixed(pred), "test")
    assert out["pixel_accuracy"] == pytest.approx(4 / 6)
    assert out["miou"] == pytest.approx((2 / 4 + 2 / 4) / 2)


def test_model_output_shape_mismatch_is_a_clear_error():
    y = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"segmentation: the model returned \(1, 21, 2, 3\), expected \[B, 21, 4, 4\]"):
        _objective(y, 255).evaluate(Fixed(torch.zeros(2, 3, dtype=torch.long)), "test")


# ----------------------------------------------------------------------------- config checks
def _experiment(**task) -> dict:
    t = {"dataset": "voc2012", "data_args": {"size": 32, "val_size": 2}, "model": "fcn_resnet50",
         "model_args": {"num_classes": 21}, "objective": "segmentation", "batch_size": 2, "steps": 2,
         "eval_every": 1, "eval_batch_size": 4, "metric": "pixel_accuracy", "optimizers": ["sgd"]}
    t.update(task)
    return {"name": "voc", "scale": "unit test, CPU", "seeds": [0], "device": "cpu", "threads": 1,
            "tasks": {"voc": t}, "optimizers": {"sgd": {"name": "sgd", "hp": {"lr": 0.01, "momentum": 0.9}}}}


@pytest.mark.parametrize("task, needles", [
    ({"metric": "accuracy"}, ["tasks.voc: objective 'segmentation' with metric 'accuracy'", "pixel_accuracy or miou"]),
    ({"objective": "classification"},
     ["objective 'classification' on dataset 'voc2012'", "segmentation dataset (voc2012)"]),
    ({"dataset": "cifar10"}, ["objective 'segmentation' on dataset 'cifar10'"]),
    ({"metric": "mIoU"}, ["tasks.voc.metric", "allowed values", "pixel_accuracy, miou"]),
])
def test_segmentation_config_errors_name_the_key_and_allowed_values(tmp_path, task, needles):
    path = tmp_path / "voc.yaml"
    path.write_text(yaml.safe_dump(_experiment(**task)))
    with pytest.raises(config.ConfigError) as exc:
        config.load_experiment(path)
    for needle in needles:
        assert needle in str(exc.value), str(exc.value)


# ----------------------------------------------------------------------------- end to end
def test_fcn_resnet50_trains_on_voc_through_optirep_train(tmp_path, capsys):
    mirror, root, out = tmp_path / "mirror", tmp_path / "root", tmp_path / "run"
    fx = make_voc2012(mirror)
    exp = tmp_path / "voc.yaml"
    exp.write_text(yaml.safe_dump(_experiment()))
    t0 = time.perf_counter()
    with override_checksums("voc2012", {TAR: fx["md5"]}):
        code = cli.main(["train", "--experiment", str(exp), "--task", "voc", "--optimizer", "sgd", "--seed", "0",
                         "--out", str(out), "--data-root", str(root), "--mirror", str(mirror), "--quiet"])
    elapsed = time.perf_counter() - t0
    assert code == 0, capsys.readouterr().err
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["metric"] == "pixel_accuracy" and rec["higher_is_better"] is True
    assert not rec["diverged"] and rec["steps"] == 2 and rec["final_linear_key"] is None
    extra = rec["extra"]
    assert 0.0 <= rec["final_test"] <= 1.0 and rec["final_test"] == extra["test_pixel_accuracy"]
    assert 0.0 <= extra["test_miou"] <= 1.0 and 0.0 <= extra["val_miou"] <= 1.0
    assert rec["final_val"] == extra["val_pixel_accuracy"] and 1 <= extra["test_classes_present"] <= 21
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["val_metric"]) for r in rows)
    assert not (out / "features.npz").exists()  # penultimate features are a classifier's
    print(f"FCN-ResNet50 end to end (fetch, load, build, 2 steps, 4 evals): {elapsed:.1f} s")
