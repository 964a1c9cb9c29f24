"""Per-run analysis: the seed's fc-weight spectral metrics and penultimate-feature metrics.

    optirep analyze RUN_DIR --out results/<exp>/analysis/<task>/<label>/seed<s>.json

Reads a finished run directory (docs/DESIGN.md "Run directory": `metrics.json` must exist; `model.pt`,
`features.npz` and `config.json` are used when present) and writes one flat JSON whose scalar
keys the report layer aggregates over seeds:

    seed_effective_rank, seed_top5_concentration    the seed's metrics on the final linear weight
                                                    (claims V6-9, V6-10; `spectral.seed_*`)
    fc_erank, fc_top{1,5,10}_energy                 Roy-Vetterli erank / top-k energy of that weight
    feature_erank, feature_top{1,5,10}_energy       the same on the features (mean-centred unless
                                                    --no-center; `feature_centered` says which)

Which weight is "the final linear layer": the key `final_linear_key` recorded by training (in
metrics.json, its `extra`, or config.json; the trainer takes it from `optirep.models.final_linear`).
When no run file names one (or it is null, as for language-model runs), the last 2-D `*.weight`
tensor in the state_dict's order is used, which is `fc.weight` for torchvision ResNets and the
output head for the repo's MLPs and LMs; the key used is written as `final_linear_key` with
`final_linear_key_source` ("recorded" or "last_2d_weight").

Missing pieces give NaN metrics, not errors, where the run legitimately lacks them: a diverged run
has no model.pt or features; a language-model run has no features.npz. A run that did not diverge
but has no model.pt is an error. Keys that do not apply (e.g. `final_linear_key` of a diverged run,
`feature_n` without features) are left out rather than written as null.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optirep import runio
from optirep.analysis import spectral

NAN = math.nan
SEED_TOPK = 5


def _read_json(path: Path) -> dict:
    """JSON of a run file; a truncated or non-object file raises RunFileError naming it."""
    obj = runio.read_json(path)
    if not isinstance(obj, dict):
        raise runio.RunFileError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _recorded_key(metrics: dict, config: dict) -> str | None:
    for source in (metrics, metrics.get("extra") or {}, config):
        key = source.get("final_linear_key")
        if key:
            return str(key)
    return None


def final_linear_weight(state_dict: dict[str, torch.Tensor], key: str | None = None) -> tuple[str, torch.Tensor, str]:
    """(key, weight, source) of the final linear layer in a state_dict.

    `key` (the recorded `final_linear_key`) wins when given; it must exist. Otherwise the last 2-D
    tensor whose name ends in `.weight` (or is `weight`), in the state_dict's order.
    """
    if key is not None:
        if key not in state_dict:
            weights = [k for k, v in state_dict.items() if getattr(v, "ndim", 0) == 2]
            raise KeyError(f"final_linear_key {key!r} is not in model.pt; 2-D tensors there: {weights}")
        return key, state_dict[key], "recorded"
    candidates = [k for k, v in state_dict.items()
                  if (k == "weight" or k.endswith(".weight")) and isinstance(v, torch.Tensor) and v.ndim == 2]
    if not candidates:
        raise KeyError(f"model.pt has no 2-D '*.weight' tensor to analyse; keys: {list(state_dict)[:20]}")
    return candidates[-1], state_dict[candidates[-1]], "last_2d_weight"


def _nan_weight_metrics() -> dict[str, Any]:
    out: dict[str, Any] = {"final_linear_key": None, "final_linear_key_source": None,
                           "final_linear_shape": None, "fc_singular_values": None,
                           "seed_effective_rank": NAN, f"seed_top{SEED_TOPK}_concentration": NAN}
    out.update({f"fc_{k}": NAN for k in spectral.spectrum_metrics(np.ones(1))})
    return out


def weight_metrics(state_dict: dict[str, torch.Tensor], key: str | None = None) -> dict[str, Any]:
    """The seed's metrics and the standard ones on the final linear weight, with its spectrum."""
    name, w, source = final_linear_weight(state_dict, key)
    seed = spectral.seed_metrics(w, k=SEED_TOPK)
    out: dict[str, Any] = {"final_linear_key": name, "final_linear_key_source": source,
                           "final_linear_shape": seed["shape"],
                           "fc_singular_values": seed["singular_values"],
                           "seed_effective_rank": seed["seed_effective_rank"],
                           f"seed_top{SEED_TOPK}_concentration": seed[f"seed_top{SEED_TOPK}_concentration"]}
    out.update({f"fc_{k}": v for k, v in spectral.spectrum_metrics(w).items()})
    return out


def _nan_feature_metrics() -> dict[str, Any]:
    out = {f"feature_{k}": NAN for k in spectral.spectrum_metrics(np.ones(1))}
    out.update(feature_n=None, feature_dim=None, feature_samples_per_dim=NAN, feature_centered=None)
    return out


def analyze_run(run_dir: str | os.PathLike, center: bool = True) -> dict[str, Any]:
    """Spectral and feature metrics of one finished run (see the module docstring for the keys).

    Args:
        run_dir: a run directory written by `optirep train`.
        center: mean-centre the features before their SVD (`spectral.feature_metrics`).

    Raises:
        FileNotFoundError: no metrics.json (the run has not finished), or no model.pt in a run
            that did not diverge.
        KeyError: the recorded final_linear_key is not in model.pt.
    """
    run = Path(run_dir)
    metrics_file = run / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} not found: the run has not finished (metrics.json is written last)")
    metrics = _read_json(metrics_file)
    config = _read_json(run / "config.json") if (run / "config.json").is_file() else {}
    diverged = bool(metrics.get("diverged", False))

    out: dict[str, Any] = {
        "run_dir": str(run),
        "experiment": metrics.get("experiment"), "task": metrics.get("task"),
        "label": metrics.get("label"), "optimizer": metrics.get("optimizer"),
        "diverged": diverged,
    }

    model_file = run / "model.pt"
    recorded = metrics.get("files_sha256") or {}  # absent in runs written before the hashes were recorded
    objective = config.get("task", {}).get("objective", "classification")
    if objective != "classification":
        # the seed's fc-weight spectrum is defined for a classifier head only (autoencoders and
        # LMs: feature metrics below, no fc metrics)
        out.update(_nan_weight_metrics())
    elif model_file.is_file():
        state = runio.load_state_dict(model_file, sha256=recorded.get("model.pt"))
        out.update(weight_metrics(state, _recorded_key(metrics, config)))
    elif diverged:
        out.update(_nan_weight_metrics())
    else:
        raise FileNotFoundError(f"{model_file} not found, and metrics.json does not say the run diverged")

    feature_file = run / "features.npz"
    if feature_file.is_file():
        npz = runio.load_npz(feature_file, keys=("features",), sha256=recorded.get("features.npz"))
        fm = spectral.feature_metrics(npz["features"], center=center)
        out.update({f"feature_{k}": v for k, v in fm.items()})
    else:
        out.update(_nan_feature_metrics())
    out["has_features"] = feature_file.is_file()
    # the report layer reads every top-level None as a NaN metric: leave out what does not apply
    return {k: v for k, v in out.items() if v is not None}


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON to `path` via a temporary file in the same folder and a rename.

    NaN is written as the literal `NaN` (what Python's json reads back), as in metrics.json.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=True)
            f.write("\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="optirep analyze",
                                description="Spectral (seed + Roy-Vetterli) and feature metrics of one run "
                                            "(or several in one process: one --out per run directory).")
    p.add_argument("run_dir", nargs="+", help="a finished run directory (contains metrics.json); repeatable")
    p.add_argument("--out", action="append",
                   help="JSON file to write (atomically), one per run_dir in order; default: print to stdout")
    p.add_argument("--no-center", action="store_true", help="do not mean-centre the features (RankMe's convention)")
    args = p.parse_intermixed_args(argv)  # RUN1 --out F1 RUN2 --out F2 as well as RUN1 RUN2 --out F1 --out F2
    if args.out and len(args.out) != len(args.run_dir):
        p.error(f"--out given {len(args.out)} times for {len(args.run_dir)} run directories (one per run_dir)")
    for i, run_dir in enumerate(args.run_dir):
        result = analyze_run(run_dir, center=not args.no_center)
        if args.out:
            write_json_atomic(result, args.out[i])
        else:
            print(json.dumps(result, indent=1, allow_nan=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
