"""One ResNet-18 training epoch through optirep's data path vs pure forward/backward on random tensors.

    python benchmarks/train_epoch.py --device cuda [--bf16] [--channels-last] [--n 45000] [--batch 128]

The epoch uses the training loop's own batching (optirep.train.Classification: the whole split on
the device, per-epoch permutation, batched crop+flip augmentation), AdamW, and a CIFAR-sized
in-memory split (45k random 3x32x32 images: timing only, the pixels don't matter). The reference
is the same number of AdamW steps on one pre-made random batch. The ratio shows what the data
path costs on top of the model's own compute (1.0 = free). Reported, not asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from optirep import models
from optirep.data.splits import TensorSplit
from optirep.train import Classification


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(model, opt, batches, device, bf16: bool) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for x, y in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=45_000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="default: one epoch")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (a.n,), generator=g)
    splits = SimpleNamespace(train=TensorSplit(x, y), val=None, test=None,
                             info={"augment": "crop_flip", "augment_fill": [0.0, 0.0, 0.0]})
    task = {"batch_size": a.batch}
    obj = Classification(task, splits, device, seed=0)
    steps = a.steps or obj.steps_per_epoch()

    def fresh():
        torch.manual_seed(0)
        m = models.build_model("resnet18", num_classes=10).to(device)
        if a.channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m, torch.optim.AdamW(m.parameters(), lr=1e-3)

    # warm-up (cudnn autotune, allocator) on both paths
    m, o = fresh()
    timed_steps(m, o, [obj.batch(i) for i in range(5)], device, a.bf16)

    m, o = fresh()
    _sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        xb, yb = obj.batch(step)  # indexing + augmentation, as in training
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = F.cross_entropy(m(xb), yb)
        o.zero_grad(set_to_none=True)
        loss.backward()
        o.step()
    _sync(device)
    epoch_s = time.perf_counter() - t0

    m, o = fresh()
    xb = torch.randn(a.batch, 3, 32, 32, device=device)
    yb = torch.randint(0, 10, (a.batch,), device=device)
    pure_s = timed_steps(m, o, [(xb, yb)] * steps, device, a.bf16)

    row = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "steps": steps, "batch": a.batch, "bf16": a.bf16,
           "channels_last": a.channels_last, "epoch_s": epoch_s, "pure_fwd_bwd_s": pure_s,
           "ratio": epoch_s / pure_s, "images_per_s": steps * a.batch / epoch_s}
    print(json.dumps(row, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(row, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
