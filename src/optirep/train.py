"""The one training loop: one (task, optimizer, seed) run into one directory.

    optirep train --experiment experiments/smoke.yaml --task digits32_resnet18 --optimizer adamw \
        --seed 0 --out results/smoke/runs/digits32_resnet18/adamw/seed0 [--set task.steps=20] [--quiet]

Reads top to bottom: config -> seed -> data -> model -> optimizer -> loop (eval, log, checkpoint)
-> outputs (metrics.json last, atomically: its presence means the run finished). Rerunning into the
same directory resumes from the last checkpoint and gives bit-identical metrics on CPU; a finished
run is not retrained (and drops its last checkpoint; model.pt keeps the final weights). A NaN/inf loss
ends the run with `diverged: true`: a result, not a crash. `optirep train` checkpoints on SIGTERM (a
cluster's time limit or preemption) and exits with status 143; its rerun resumes.

Determinism: batch order and augmentation are functions of (seed, epoch/step) alone, and the
global RNG (dropout) is checkpointed, so a resumed run replays exactly what it would have done.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import optirep
from optirep import data as datalib
from optirep import models, optim, runio
from optirep.config import HIGHER_IS_BETTER, ConfigError
from optirep.launch import peak_rss_bytes
from optirep.provenance import git_sha


# ----------------------------------------------------------------------------- small helpers
#: Set by SIGTERM once `checkpoint_on_sigterm()` ran (`optirep train` does): Slurm's warning before it
#: kills a job at its time limit or on preemption. The loop then checkpoints and raises `Preempted`.
from optirep.preempt import SIGTERM_RECEIVED, Preempted, checkpoint_on_sigterm  # noqa: E402,F401 - re-exported


def atomic_write_json(path: Path, obj: Any) -> None:
    runio.write_json_atomic(path, obj, default=_json_default)


def atomic_torch_save(obj: Any, path: Path) -> str:
    """Returns the file's sha256 (recorded in metrics.json, verified by the readers)."""
    return runio.save_torch_atomic(obj, path)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def _finite_or_nan(x: float) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else float("nan")


def code_path(opt: torch.optim.Optimizer) -> str:
    """Which implementation each param group's step ran: "compiled", "foreach" or "reference" for this
    project's optimizers (their `foreach` / `compile` settings, as their step() decides), "torch" plus the
    group's foreach setting for torch's own optimizers. Distinct paths joined by "+" (recorded per run so a
    comparison whose arms ran different code can be flagged; issue #10, rule 11)."""
    from optirep.optim._base import use_compiled

    paths = []
    for group in opt.param_groups:
        params = [p for p in group["params"] if p is not None]
        if "compile" in group and "foreach" in group and params:
            if group["foreach"] is False:
                paths.append("reference")
            elif use_compiled(group["compile"], sum(p.numel() for p in params), params[0].device):
                paths.append("compiled")
            else:
                paths.append("foreach")
        else:
            fe = group.get("foreach")
            paths.append("torch" + ("" if fe is None else (":foreach" if fe else ":for-loop")))
    return "+".join(sorted(set(paths)))


def versions() -> dict:
    out = {"optirep": optirep.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "numpy": np.__version__}
    for mod in ("torchvision", "transformers"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but torch.cuda.is_available() is False")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _gen(*keys: int) -> torch.Generator:
    """A CPU generator that depends only on `keys` (so batches replay identically on resume)."""
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- objectives
class Objective:
    """Batches, loss and evaluation for one task kind (classification, lm, autoencoder, segmentation)."""

    def __init__(self, task: dict, splits, device: torch.device, seed: int):
        self.task, self.splits, self.device, self.seed = task, splits, device, seed
        self.bs = task["batch_size"]
        self.eval_bs = task.get("eval_batch_size", max(256, self.bs))

    def steps_per_epoch(self) -> int:
        n = len(self.splits.train)
        return max(1, n // self.bs) if n >= self.bs else 1

    def _index(self, step: int) -> torch.Tensor:
        spe = self.steps_per_epoch()
        epoch, k = divmod(step, spe)
        perm = torch.randperm(len(self.splits.train), generator=_gen(self.seed, 1, epoch))
        return perm[k * self.bs:(k + 1) * self.bs]


class Classification(Objective):
    def __init__(self, task, splits, device, seed):
        super().__init__(task, splits, device, seed)
        self.train_x, self.train_y = splits.train.x.to(device), splits.train.y.to(device)

    def batch(self, step: int):
        idx = self._index(step).to(self.device)
        x, y = self.train_x[idx], self.train_y[idx]
        kind = self.splits.info.get("augment", "none")
        if kind != "none":  # set by the loader from data_args.augment (CIFAR: crop+flip, the V6 protocol)
            x = datalib.augment(x, kind, _gen(self.seed, 2, step), fill=self.splits.info.get("augment_fill", 0.0))
        return x, y

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model, split: str) -> dict:
        ds = getattr(self.splits, split)
        correct, total, loss_sum = 0, 0, 0.0
        for i in range(0, len(ds), self.eval_bs):
            x = ds.x[i:i + self.eval_bs].to(self.device)
            y = ds.y[i:i + self.eval_bs].to(self.device)
            logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
        return {"metric": correct / max(total, 1), "loss": loss_sum / max(total, 1)}

    @torch.no_grad()
    def features(self, model, n: int) -> dict:
        x, y = self.splits.test.x[:n], self.splits.test.y[:n]
        feats = [model.features(x[i:i + self.eval_bs].to(self.device)).float().cpu() for i in range(0, len(x), self.eval_bs)]
        return {"features": torch.cat(feats).numpy(), "labels": y.numpy()}


class LanguageModel(Objective):
    """Random windows of `block` tokens, sampled with replacement (the seed's GPT protocol)."""

    def __init__(self, task, splits, device, seed):
        super().__init__(task, splits, device, seed)
        margs = task.get("model_args", {})
        # the model's context: block_size (the seed's GPT) or n_positions (transformers' GPT-2)
        self.block = margs.get("block_size") or margs.get("n_positions") or 32
        self.train_tokens = splits.train.to(device)
        self.eval_batches = task.get("eval_batches", 20)

    def steps_per_epoch(self) -> int:
        return max(1, len(self.splits.train) // (self.bs * self.block))

    def _windows(self, tokens: torch.Tensor, g: torch.Generator, n: int):
        starts = torch.randint(len(tokens) - self.block - 1, (n,), generator=g)
        offs = torch.arange(self.block + 1)
        w = tokens[(starts[:, None] + offs).to(tokens.device)]
        return w[:, :-1], w[:, 1:]

    def batch(self, step: int):
        return self._windows(self.train_tokens, _gen(self.seed, 3, step), self.bs)

    def loss(self, model, batch):
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model, split: str) -> dict:
        tokens = {"train": self.splits.train, "val": self.splits.val,
                  "test": self.splits.test if self.splits.test is not None else self.splits.val}[split]
        tokens = tokens.to(self.device)
        # Fixed windows per split (seeded): every eval of every optimizer sees the same tokens.
        g = _gen(10_007, {"train": 0, "val": 1, "test": 2}[split])
        nll, n = 0.0, 0
        for _ in range(self.eval_batches):
            x, y = self._windows(tokens, g, self.bs)
            logits = model(x).float()
            nll += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"))
            n += y.numel()
        mean = nll / max(n, 1)
        return {"metric": math.exp(min(mean, 50.0)), "loss": mean}


class Autoencoder(Objective):
    """Several reconstruction losses on the same images, summed or Planeswalker-multiplexed.

    Every evaluation also reports `mean_image_mse`: the MSE of the per-pixel mean of the training
    images (in the same [0, 1] units) used as the reconstruction of every image of the split, the
    score of a model that ignores its input. A reconstruction MSE at or above it is a failure to
    compress (`extra.mean_image_test_mse` and `extra.mse_over_mean_image` in metrics.json).
    """

    def __init__(self, task, splits, device, seed):
        super().__init__(task, splits, device, seed)
        from optirep.losses.planeswalker import Planeswalker
        from optirep.losses.reconstruction import reconstruction_losses

        x = splits.train.x
        self.lo, self.hi = float(x.min()), float(x.max())  # map inputs to [0, 1] for BCE-type terms
        self.train_x = self._unit(x.to(device))
        self.mean_image = self.train_x.mean(0, keepdim=True)  # [1, C, H, W]
        self.terms = reconstruction_losses(task["loss_terms"])
        mux = task.get("multiplexer", {"mode": "sum"})
        self.mux = Planeswalker(list(task["loss_terms"]), mode=mux.get("mode", "sum"), **mux.get("args", {}))

    def _unit(self, x):
        return (x - self.lo) / (self.hi - self.lo + 1e-12)

    def batch(self, step: int):
        return self.train_x[self._index(step).to(self.device)]

    def term_values(self, model, x):
        recon = model(x)
        return {name: fn(recon, x) for name, fn in self.terms.items()}

    def loss(self, model, batch):
        value = self.mux(self.term_values(model, batch))
        return value

    def after_step(self):
        if self.mux.mode != "sum":
            self.mux.step_weights()

    @torch.no_grad()
    def evaluate(self, model, split: str) -> dict:
        ds = getattr(self.splits, split)
        sums: dict[str, float] = {}
        n = 0
        for i in range(0, len(ds), self.eval_bs):
            x = self._unit(ds.x[i:i + self.eval_bs].to(self.device))
            for k, v in self.term_values(model, x).items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            sums["_mse"] = sums.get("_mse", 0.0) + float(F.mse_loss(model(x), x)) * len(x)
            sums["_mean"] = sums.get("_mean", 0.0) + float(F.mse_loss(self.mean_image.expand_as(x), x)) * len(x)
            n += len(x)
        out = {k: v / max(n, 1) for k, v in sums.items()}
        mean_mse = out.pop("_mean")
        return {"metric": out.pop("_mse"), "loss": sum(out.values()), "terms": out, "mean_image_mse": mean_mse}

    @torch.no_grad()
    def features(self, model, n: int) -> dict:
        x = self._unit(self.splits.test.x[:n].to(self.device))
        return {"features": model.encode(x).flatten(1).float().cpu().numpy(), "labels": self.splits.test.y[:n].numpy()}


class Segmentation(Objective):
    """Per-pixel cross-entropy on logits [B, C, H, W] against masks [B, H, W]; void pixels count nowhere.

    Metrics over every non-void pixel of a split: pixel accuracy (the seed's metric) and mean IoU,
    from one confusion matrix: IoU_c = TP_c / (TP_c + FP_c + FN_c), averaged over the classes
    present (in the targets or the predictions), the VOC definition when every class occurs.
    With the data_arg `seed_mask_bug` the loader sets no ignore_index and every pixel counts, as
    in the seed (its plain CrossEntropyLoss and pixel accuracy over target.numel()).
    """

    def __init__(self, task, splits, device, seed):
        super().__init__(task, splits, device, seed)
        # a [256, 21, 224, 224] float batch of logits alone is 1 GiB: evaluate in small batches
        self.eval_bs = task.get("eval_batch_size", max(16, self.bs))
        self.train_x, self.train_y = splits.train.x.to(device), splits.train.y.to(device)
        self.num_classes = splits.info["num_classes"]
        ignore = splits.info.get("ignore_index")
        # None (seed_mask_bug): torch's default -100, which no mask holds, so every pixel counts
        self.ignore = -100 if ignore is None else int(ignore)

    def batch(self, step: int):
        idx = self._index(step).to(self.device)
        return self.train_x[idx], self.train_y[idx]

    def _logits(self, model, x, y):
        logits = model(x)
        if logits.ndim != 4 or logits.shape[1] != self.num_classes or logits.shape[2:] != y.shape[1:]:
            raise ValueError(f"segmentation: the model returned {tuple(logits.shape)}, expected "
                             f"[B, {self.num_classes}, {', '.join(map(str, y.shape[1:]))}] for masks {tuple(y.shape)}")
        return logits

    def loss(self, model, batch):
        x, y = batch
        # sum / count rather than the mean, so an all-void batch gives 0 instead of NaN
        total = F.cross_entropy(self._logits(model, x, y).float(), y, ignore_index=self.ignore, reduction="sum")
        return total / (y != self.ignore).sum().clamp_min(1)

    @torch.no_grad()
    def evaluate(self, model, split: str) -> dict:
        ds = getattr(self.splits, split)
        c = self.num_classes
        confusion = torch.zeros(c * c, dtype=torch.long, device=self.device)  # [target * C + prediction]
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for i in range(0, len(ds), self.eval_bs):
            x = ds.x[i:i + self.eval_bs].to(self.device)
            y = ds.y[i:i + self.eval_bs].to(self.device)
            logits = self._logits(model, x, y).float()
            loss_sum += F.cross_entropy(logits, y, ignore_index=self.ignore, reduction="sum").double()
            keep = y != self.ignore
            confusion += torch.bincount(y[keep] * c + logits.argmax(1)[keep], minlength=c * c)
        cm = confusion.reshape(c, c).double().cpu()
        total = float(cm.sum())
        tp = cm.diagonal()
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        pixel_accuracy = float(tp.sum()) / max(total, 1.0)
        # no labelled pixel at all (an empty split): 0, as Classification scores an empty split
        miou = float((tp[present] / union[present]).mean()) if bool(present.any()) else 0.0
        metric = miou if self.task["metric"] == "miou" else pixel_accuracy
        return {"metric": metric, "loss": float(loss_sum) / max(total, 1.0), "pixel_accuracy": pixel_accuracy,
                "miou": miou, "classes_present": int(present.sum())}


OBJECTIVES = {"classification": Classification, "lm": LanguageModel, "autoencoder": Autoencoder,
              "segmentation": Segmentation}


# ----------------------------------------------------------------------------- the run
#: Optimizer steps at the start of every process (a fresh or a resumed run) that `time_per_step_s` and
#: `time_per_opt_step_s` leave out: allocation of the optimizer state, torch.compile of the fused
#: kernels (NeuroPlastic's first compiled step is its second), first-touch page faults. Reported
#: separately as `warmup_steps`, `warmup_time_s` and `warmup_opt_time_s`.
TIMING_WARMUP_STEPS = 3


def build_model(task: dict, splits, device: torch.device) -> torch.nn.Module:
    """The task's model on `device` (LM/text tasks get the tokenizer's vocabulary size)."""
    model_args = dict(task.get("model_args", {}))
    if task["objective"] == "lm" or splits.info.get("kind") == "text":
        model_args.setdefault("vocab_size", splits.info["vocab_size"])  # the tokenizer's
    try:
        model = models.build_model(task["model"], **model_args).to(device)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task.model_args ({task['model']}): {exc}") from None
    if task.get("channels_last") and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _timed_means(state: dict) -> dict:
    """Per-step times over the steps after each process's warm-up; all steps if every step was warm-up."""
    warm_n = state.get("warm_steps", 0)
    timed_n = state["opt_steps"] - warm_n
    if timed_n > 0:
        step_s = (state["train_time"] - state.get("warm_time", 0.0)) / timed_n
        opt_s = (state["opt_time"] - state.get("warm_opt_time", 0.0)) / timed_n
    else:  # a run shorter than its warm-up: no clean step to time, say so
        step_s = opt_s = float("nan")
    return {"time_per_step_s": step_s, "time_per_opt_step_s": opt_s, "timed_steps": max(timed_n, 0),
            "warmup_steps": warm_n, "warmup_time_s": state.get("warm_time", 0.0),
            "warmup_opt_time_s": state.get("warm_opt_time", 0.0)}


def train(run: dict, out: Path, data_root: str | None = None, mirror: str | None = None,
          quiet: bool = False, stop_after: int | None = None, own_peak_memory: bool = True) -> dict | None:
    """Train one run into `out`; returns the final metrics record.

    `own_peak_memory`: False when this process's peak RSS cannot be reset before the run (a batch
    whose kernel ignores /proc/self/clear_refs), so the peak would include earlier runs; on CPU the
    record's `peak_memory_bytes` is then null rather than another run's peak.

    `stop_after`: leave after that many steps in this invocation, checkpointed and without
    metrics.json (a time-limited cluster slot); rerunning continues. Returns None then.

    The run is validated completely before anything is written (`runio.validate_run`; config.json
    only once data, model and optimizer are built), and `out` is locked for the run's lifetime
    (`runio.RunDir`: a second writer gets RunLockedError; stale files of a killed run are cleaned).
    """
    out = Path(out)
    runio.validate_stop_after(stop_after)
    runio.validate_run(run)
    with runio.RunDir(out, run, quiet) as rundir:
        if rundir.finished is not None:
            if not quiet:
                print(f"{out}: already finished", file=sys.stderr)
            return rundir.finished
        return _train(run, out, rundir, data_root, mirror, quiet, stop_after, own_peak_memory)


def _train(run: dict, out: Path, rundir: runio.RunDir, data_root: str | None, mirror: str | None,
           quiet: bool, stop_after: int | None, own_peak_memory: bool = True) -> dict | None:
    final_file, ckpt_file = out / "metrics.json", out / runio.CKPT_NAME

    # -- seed and device
    task, seed = run["task"], run["seed"]
    if run.get("threads"):
        torch.set_num_threads(int(run["threads"]))
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
    device = pick_device(run["device"])

    # -- data (the subset/split seed is the run seed: every optimizer sees the same subset)
    try:
        splits = datalib.load(task["dataset"], root=data_root, mirror=mirror, seed=seed, **task.get("data_args", {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task.data_args ({task['dataset']}): {exc}") from None
    objective = OBJECTIVES[task["objective"]](task, splits, device, seed)

    # -- model
    model = build_model(task, splits, device)
    final_linear_key = None
    if task["objective"] == "classification":
        fl = models.final_linear(model)
        final_linear_key = next(k for k, v in model.named_parameters() if v is fl.weight)

    # -- optimizer (+ schedule)
    o = run["optimizer"]
    opt = optim.build(o["name"], model.parameters(), **o["hp"])
    steps = task.get("steps") or task["epochs"] * objective.steps_per_epoch()
    spe = objective.steps_per_epoch()
    sched = None
    if task.get("lr_schedule", "none") == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    eval_every = task.get("eval_every") or max(1, steps // 10)
    ckpt_every = task.get("checkpoint_every") or eval_every
    higher = HIGHER_IS_BETTER[task["metric"]]

    # -- state (fresh or resumed)
    state = {"step": 0, "history": [], "best_val": None, "best_val_step": None, "train_time": 0.0,
             "opt_time": 0.0, "opt_steps": 0, "diverged": False, "diverged_step": None}
    rundir.write_config()  # the run is valid: data, model and optimizer are built
    ck = runio.resume_checkpoint(out, map_location=device)
    if ck is not None:
        model.load_state_dict(ck["model"]), opt.load_state_dict(ck["optimizer"])
        if sched is not None:
            sched.load_state_dict(ck["scheduler"])
        if ck.get("mux") is not None:
            objective.mux.load_state_dict(ck["mux"])
        torch.set_rng_state(ck["rng_cpu"])
        if device.type == "cuda" and ck.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ck["rng_cuda"])
        state = ck["state"]
        print(f"{out}: resuming from the checkpoint at step {state['step']}", file=sys.stderr)
    # metrics.jsonl is rewritten from the checkpointed history, so a resumed run's log has no duplicate rows.
    with open(out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r, default=_json_default) + "\n" for r in state["history"])

    def checkpoint():
        # Losses not yet averaged into a log row travel with the checkpoint (exact float32 values),
        # so a run stopped between evals logs the same train_loss as an uninterrupted one.
        state["pending"] = [float(v) for v in pending]
        runio.save_checkpoint({
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "mux": objective.mux.state_dict() if hasattr(objective, "mux") else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "state": state,
        }, ckpt_file)

    use_closure = bool(o.get("closure"))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(task.get("bf16")))
    # per-step losses not yet synced to the host
    pending: list[torch.Tensor] = [torch.tensor(v, device=device) for v in state.pop("pending", [])]
    bar = None
    if not quiet:
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=state["step"], desc=f"{run['task_name']}/{run['label']}/seed{seed}",
                   file=sys.stderr, dynamic_ncols=True)

    model.train()
    stop_at = state["step"] + stop_after if stop_after else None
    for key in ("warm_steps", "warm_time", "warm_opt_time"):
        state.setdefault(key, 0)
    warm_left = TIMING_WARMUP_STEPS  # of this process
    while state["step"] < steps and not state["diverged"]:
        step = state["step"]
        if (stop_at is not None and step >= stop_at) or SIGTERM_RECEIVED.is_set():
            checkpoint()
            if bar is not None:
                bar.close()
            if SIGTERM_RECEIVED.is_set():
                raise Preempted(f"{out}: SIGTERM at step {step} of {steps}; checkpointed, rerun to resume")
            return None
        if step % spe == 0 and hasattr(opt, "set_epoch"):
            opt.set_epoch(step // spe + 1)  # 1-based, as the seeds' epoch loops count
        t0 = time.perf_counter()
        batch = objective.batch(step)

        def closure():
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = objective.loss(model, batch)
            loss.backward()
            return loss

        try:
            if use_closure:
                t1 = time.perf_counter()
                loss = opt.step(closure)
                t_opt = time.perf_counter() - t1  # includes the forward/backward the closure runs
            else:
                loss = closure()
                if task.get("grad_clip"):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), task["grad_clip"])
                t1 = time.perf_counter()
                opt.step()
                t_opt = time.perf_counter() - t1
        except RuntimeError:
            # An optimizer that cannot digest NaN/inf gradients (e.g. EnhancedSGD's histogram, as in
            # the seed) raises inside step(): that is a divergence at this step, not a crash.
            if all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters()):
                raise
            state["step"] += 1
            state["diverged"], state["diverged_step"] = True, state["step"]
            pending.clear()
            checkpoint()
            break
        if sched is not None:
            sched.step()
        if hasattr(objective, "after_step"):
            objective.after_step()
        pending.append(loss.detach().float())
        state["step"] = step = step + 1
        state["opt_time"] += t_opt
        state["opt_steps"] += 1
        warm = warm_left > 0
        if warm:
            warm_left -= 1
            state["warm_steps"] += 1
            state["warm_opt_time"] += t_opt
        train_time_before = state["train_time"]

        if step % eval_every == 0 or step == steps:
            losses = torch.stack(pending).cpu()
            pending.clear()
            if device.type == "cuda":
                torch.cuda.synchronize()
            state["train_time"] += time.perf_counter() - t0  # the part of this step before the sync
            bad = (~torch.isfinite(losses)).nonzero()
            if len(bad):
                state["diverged"], state["diverged_step"] = True, step - len(losses) + int(bad[0]) + 1
            else:
                model.eval()
                val = objective.evaluate(model, "val")
                model.train()
                v = val["metric"]
                if not math.isfinite(v):
                    state["diverged"], state["diverged_step"] = True, step
                else:
                    if state["best_val"] is None or (v > state["best_val"] if higher else v < state["best_val"]):
                        state["best_val"], state["best_val_step"] = v, step
                diag = opt.diagnostics() if hasattr(opt, "diagnostics") else {}
                row = {"step": step, "train_loss": float(losses.mean()), "val_metric": v, "val_loss": val["loss"],
                       "lr": opt.param_groups[0]["lr"], "wall_time_s": state["train_time"], "diag": diag}
                state["history"].append(row)
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row, default=_json_default) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{v:.4g}")
        else:
            state["train_time"] += time.perf_counter() - t0
        if warm:
            state["warm_time"] += state["train_time"] - train_time_before
        # checkpoint_every is its own period (also between evals): pending losses travel in the checkpoint
        if step % ckpt_every == 0 or step == steps or state["diverged"]:
            checkpoint()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    # -- outputs
    model.eval()
    nan = float("nan")
    extra: dict[str, Any] = {}
    files_sha256: dict[str, str] = {}  # what the readers verify (runio.load_state_dict / load_npz)
    if state["diverged"]:
        final_test = final_val = nan
        final_train_loss = nan
    else:
        test = objective.evaluate(model, "test" if splits.test is not None else "val")
        val = objective.evaluate(model, "val")
        final_test, final_val = test["metric"], val["metric"]
        final_train_loss = state["history"][-1]["train_loss"] if state["history"] else nan
        if task["objective"] == "lm":
            tr = objective.evaluate(model, "train")
            extra.update(train_ppl=tr["metric"], val_ppl=val["metric"], test_split="test" if splits.test is not None else "val")
        if task["objective"] == "segmentation":
            extra.update(test_pixel_accuracy=test["pixel_accuracy"], test_miou=test["miou"],
                         val_pixel_accuracy=val["pixel_accuracy"], val_miou=val["miou"],
                         test_classes_present=test["classes_present"])
        if task["objective"] == "autoencoder":
            extra.update(mean_image_test_mse=test["mean_image_mse"], mean_image_val_mse=val["mean_image_mse"],
                         mse_over_mean_image=test["metric"] / test["mean_image_mse"] if test["mean_image_mse"] > 0 else nan,
                         test_terms=test["terms"], mux_weights=objective.mux.weights_dict()
                         if hasattr(objective.mux, "weights_dict") else None)
        n_feat = task.get("features", 512 if task["objective"] == "classification" else 0)
        if n_feat and hasattr(objective, "features"):
            buf = io.BytesIO()
            np.savez_compressed(buf, **objective.features(model, n_feat))
            runio.write_bytes_atomic(out / "features.npz", buf.getvalue())
            files_sha256["features.npz"] = hashlib.sha256(buf.getvalue()).hexdigest()
        files_sha256["model.pt"] = atomic_torch_save(model.state_dict(), out / "model.pt")
    state_bytes = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                      if isinstance(v, torch.Tensor))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else peak_rss_bytes() if own_peak_memory else None)
    record = {
        "experiment": run["experiment"], "scale": run["scale"], "task": run["task_name"], "label": run["label"],
        "optimizer": o["name"], "seed": seed, "hp": o["resolved_hp"], "metric": task["metric"],
        "higher_is_better": higher, "final_test": _finite_or_nan(final_test), "final_val": _finite_or_nan(final_val),
        "best_val": _finite_or_nan(state["best_val"]) if state["best_val"] is not None else nan,
        "best_val_step": state["best_val_step"], "final_train_loss": _finite_or_nan(final_train_loss),
        "steps": state["step"], "planned_steps": steps, "diverged": state["diverged"],
        "diverged_step": state["diverged_step"], "wall_time_s": state["train_time"],
        **_timed_means(state),
        "opt_time_includes_closure": use_closure,
        "peak_memory_bytes": peak, "optimizer_state_bytes": state_bytes, "param_bytes": param_bytes,
        "diagnostics": state["history"][-1]["diag"] if state["history"] else {},
        "final_linear_key": final_linear_key, "extra": extra, "versions": versions(), "git_sha": git_sha(),
        "code_path": code_path(opt),
        "device": device_name(device), "config_hash": run["config_hash"], "files_sha256": files_sha256,
    }
    atomic_write_json(final_file, record)
    # A finished run is never resumed (rerunning returns its metrics.json), so its last checkpoint, the
    # largest file of the run (weights + optimizer state), is dropped; model.pt keeps the final weights.
    ckpt_file.unlink(missing_ok=True)
    (out / runio.CKPT_PREV).unlink(missing_ok=True)
    return record
