"""Grad-CAM of one vision task: the grid figure (images x optimizers) and ROAD faithfulness per seed.

    python analysis/gradcam.py --experiment experiments/cpu_vision.yaml --results results/cpu_vision \
        --task digits32_resnet18 --out-json results/cpu_vision/gradcam/digits32_resnet18.json \
        --out-fig results/cpu_vision/gradcam/digits32_resnet18.png

Fixed image set: the first `--per-class` test images of each class (same images for every
optimizer), true-class targets, layers layer3 and layer4. CAM intensities are min-max normalised
per image by pytorch-grad-cam, so only ROAD scores (with RandomCAM as the floor) are compared
across optimizers. With the ImageNet stem on 32x32 inputs layer4 is 1x1 and layer3 2x2: the
maps are coarse by construction, and the JSON records the spatial size of each layer.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from optirep import config, data, models, runio
from optirep.analysis import gradcam
from optirep.analysis.stats import summarize

LAYERS = ("layer3", "layer4")


def fixed_images(splits, per_class: int):
    y = splits.test.y
    idx = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in torch.unique(y)])
    return splits.test.x[idx], y[idx]


def load_model(task: dict, run_dir: Path) -> torch.nn.Module:
    model = models.build_model(task["model"], **task.get("model_args", {}))
    model.load_state_dict(runio.load_state_dict(run_dir / "model.pt"))
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True)
    p.add_argument("--results", required=True, type=Path)
    p.add_argument("--task", required=True)
    p.add_argument("--out-json", required=True, type=Path)
    p.add_argument("--out-fig", required=True, type=Path)
    p.add_argument("--per-class", type=int, default=1)
    p.add_argument("--data-root", default=None)
    p.add_argument("--mirror", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    cfg = config.load_experiment(a.experiment)
    task = cfg["tasks"][a.task]
    splits = data.load(task["dataset"], root=a.data_root, mirror=a.mirror, seed=cfg["seeds"][0],
                       **task.get("data_args", {}))
    images, labels = fixed_images(splits, a.per_class)

    result = {"task": a.task, "experiment": cfg["name"], "scale": cfg["scale"], "layers": list(LAYERS),
              "n_images": len(labels), "labels": {}}
    fig_maps = {}
    for label in task["optimizers"]:
        per_seed = {layer: [] for layer in LAYERS}
        floor = {layer: [] for layer in LAYERS}
        for seed in cfg["seeds"]:
            run = config.label_dir(a.results, "runs", cfg, a.task, label) / f"seed{seed}"
            m = runio.read_record(run / "metrics.json", expect={"task": a.task, "label": label, "seed": seed})
            if m.get("diverged"):
                continue  # no meaningful weights; counted in the aggregate's n_diverged
            model = load_model(task, run)
            maps = gradcam.gradcam_maps(model, images, labels, LAYERS)
            rand = gradcam.random_cam_floor(model, images, labels, LAYERS, seed=seed)
            for layer in LAYERS:
                per_seed[layer].append(float(np.mean(gradcam.road_scores(model, images, labels, maps[layer], seed=seed))))
                floor[layer].append(float(np.mean(rand[layer])))
            if seed == cfg["seeds"][0]:
                fig_maps[label] = maps["layer3"]
        result["labels"][label] = {
            layer: {"road": summarize(per_seed[layer]), "road_per_seed": per_seed[layer],
                    "random_floor": summarize(floor[layer]),
                    "above_floor": [r - f for r, f in zip(per_seed[layer], floor[layer])]}
            for layer in LAYERS
        }
    with torch.no_grad():
        probe = models.build_model(task["model"], **task.get("model_args", {})).eval()
        sizes = {}
        hooks = [gradcam.resolve_layer(probe, layer).register_forward_hook(
            lambda mod, inp, out, layer=layer: sizes.__setitem__(layer, list(out.shape[-2:]))) for layer in LAYERS]
        probe(images[:1])
        for h in hooks:
            h.remove()
    result["spatial_size"] = sizes

    a.out_fig.parent.mkdir(parents=True, exist_ok=True)
    if fig_maps:
        gradcam.gradcam_grid(images, fig_maps, a.out_fig,
                             title=f"Grad-CAM layer3, true class ({cfg['scale']}); intensities not comparable")
    else:
        raise SystemExit(f"every run of {a.task} diverged: no Grad-CAM figure")
    tmp = a.out_json.with_name(a.out_json.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, a.out_json)
    print(f"{a.out_json}: ROAD for {len(result['labels'])} optimizers; figure {a.out_fig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
