"""Experiment YAMLs: load, validate once (JSON Schema + registry checks), resolve one run.

    python -m optirep.config experiments/smoke.yaml     # validate and print the resolved grid

Config is data: `experiments/schema.yaml` checks the shape (unknown keys are errors), then
`check_semantics` checks names against the registries (optimizers, models, datasets, hyperparameter
names), so a typo fails before any training with the key and the allowed values in the message.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "experiments" / "schema.yaml"
SEGMENTATION_METRICS = ("pixel_accuracy", "miou")
#: Orientation of every task metric (the schema's `metric` enum), for training, aggregation and verdicts.
HIGHER_IS_BETTER = {"accuracy": True, "perplexity": False, "recon_mse": False, "pixel_accuracy": True, "miou": True}


class ConfigError(ValueError):
    """An experiment file or override is invalid; the message names the file and key."""


def schema_path(experiment_path: Path | None = None) -> Path:
    """experiments/schema.yaml beside the experiment file, else the repository's."""
    if experiment_path is not None:
        beside = Path(experiment_path).resolve().parent / "schema.yaml"
        if beside.exists():
            return beside
    return DEFAULT_SCHEMA


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_schema(cfg: dict, source: str, schema_file: Path | None = None) -> None:
    schema = yaml.safe_load(Path(schema_file or DEFAULT_SCHEMA).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            msg = e.message
            if e.validator == "additionalProperties":
                allowed = sorted(e.schema.get("properties", {}))
                msg += f" (allowed keys: {', '.join(allowed)})"
            elif e.validator == "enum":
                msg += f" (allowed values: {', '.join(map(str, e.validator_value))})"
            lines.append(f"  {_where(e)}: {msg}")
        raise ConfigError(f"{source}: invalid experiment config:\n" + "\n".join(lines))


def _hp_names(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "params"}


def check_semantics(cfg: dict, source: str) -> None:
    """Names that only the registries know: optimizers, models, datasets, hyperparameters."""
    from optirep import data, models, optim, tuning

    problems: list[str] = []
    labels = cfg["optimizers"]
    for label, o in labels.items():
        if o["name"] not in optim.REGISTRY:
            problems.append(f"optimizers.{label}.name: unknown optimizer {o['name']!r} "
                            f"(allowed values: {', '.join(optim.available())})")
            continue
        allowed = _hp_names(optim.spec(o["name"]).cls)
        for key in [*o.get("hp", {}), *o.get("search_space", {})]:
            if key not in allowed:
                problems.append(f"optimizers.{label}: unknown hyperparameter {key!r} for {o['name']} "
                                f"(allowed: {', '.join(sorted(allowed))})")
        if o.get("tune") and not o.get("search_space"):
            problems.append(f"optimizers.{label}: tune: true needs a search_space")
        lr_from = o.get("lr_from")
        if lr_from and lr_from["label"] not in labels:
            problems.append(f"optimizers.{label}.lr_from.label: unknown label {lr_from['label']!r} "
                            f"(allowed values: {', '.join(labels)})")
    problems += tuning.check_tuning(cfg)
    for tname, t in cfg["tasks"].items():
        if t["dataset"] not in data.DATASETS:
            problems.append(f"tasks.{tname}.dataset: unknown dataset {t['dataset']!r} "
                            f"(allowed values: {', '.join(data.DATASETS)})")
        if t["model"] not in models.available():
            problems.append(f"tasks.{tname}.model: unknown model {t['model']!r} "
                            f"(allowed values: {', '.join(models.available())})")
        for label in t["optimizers"]:
            if label not in labels:
                problems.append(f"tasks.{tname}.optimizers: unknown optimizer label {label!r} "
                                f"(allowed values: {', '.join(labels)})")
        gate = t.get("gate")
        if gate and gate["optimizer"] not in t["optimizers"]:
            problems.append(f"tasks.{tname}.gate.optimizer: {gate['optimizer']!r} is not one of this task's "
                            f"optimizers ({', '.join(t['optimizers'])})")
        if t["objective"] == "autoencoder" and not t.get("loss_terms"):
            problems.append(f"tasks.{tname}: objective autoencoder needs loss_terms")
        segmentation = t["objective"] == "segmentation"
        if segmentation != (t["metric"] in SEGMENTATION_METRICS):
            problems.append(f"tasks.{tname}: objective {t['objective']!r} with metric {t['metric']!r}; objective "
                            f"segmentation takes metric {' or '.join(SEGMENTATION_METRICS)}, and those metrics "
                            f"need objective segmentation")
        if segmentation != (t["dataset"] in data.SEGMENTATION_DATASETS):
            problems.append(f"tasks.{tname}: objective {t['objective']!r} on dataset {t['dataset']!r}; objective "
                            f"segmentation needs a segmentation dataset ({', '.join(data.SEGMENTATION_DATASETS)}), "
                            f"and those datasets need objective segmentation")
    if problems:
        raise ConfigError(f"{source}: invalid experiment config:\n" + "\n".join("  " + p for p in problems))


def load_experiment(path: str | Path) -> dict:
    """Read, validate and return an experiment YAML (defaults filled in)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"experiment file not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(cfg).__name__}")
    validate_schema(cfg, str(path), schema_path(path))
    check_semantics(cfg, str(path))
    cfg.setdefault("device", "auto")
    if "tuning" in cfg:
        cfg["tuning"].setdefault("select_on", "final_val")
        cfg["tuning"].setdefault("sampler_seed", 0)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. task.steps=100 or optimizer.hp.lr=0.01")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts or parts[0] not in ("task", "optimizer", "run"):
        raise ConfigError(f"--set {text!r}: key must start with task., optimizer. or run. (got {key!r})")
    return parts, yaml.safe_load(raw)


def resolve_run(cfg: dict, task: str, label: str, seed: int, overrides: list[str] = (),
                hp_override: dict | None = None, source: str = "<experiment>") -> dict:
    """The complete config of one training run (what config.json records)."""
    from optirep import optim

    if task not in cfg["tasks"]:
        raise ConfigError(f"{source}: unknown task {task!r} (allowed values: {', '.join(cfg['tasks'])})")
    t = copy.deepcopy(cfg["tasks"][task])
    if label not in t["optimizers"]:
        raise ConfigError(f"{source}: task {task!r} has no optimizer {label!r} "
                          f"(allowed values: {', '.join(t['optimizers'])})")
    o = copy.deepcopy(cfg["optimizers"][label])
    entry = optim.spec(o["name"])
    run = {
        "experiment": cfg["name"], "scale": cfg["scale"], "task_name": task, "label": label, "seed": seed,
        "device": cfg.get("device", "auto"), "threads": cfg.get("threads"),
        "task": t,
        "optimizer": {"name": o["name"], "hp": dict(o.get("hp", {})),
                      "closure": o.get("closure", entry.needs_closure)},
    }
    if "multiplexer" in o:
        t["multiplexer"] = o["multiplexer"]
    if hp_override:
        run["optimizer"]["hp"].update(hp_override)
    for text in overrides:
        parts, value = parse_override(text)
        node = run
        if parts[0] == "run":  # run.device=cpu sets a top-level key
            parts = parts[1:]
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {p!r} is not a mapping")
        node[parts[-1]] = value
        if parts in (["task", "steps"], ["task", "epochs"]):
            # a run is sized by steps or by epochs, not both: setting one replaces the other
            run["task"].pop("epochs" if parts[1] == "steps" else "steps", None)
    # Re-validate the task and optimizer after overrides with the same schema.
    schema = yaml.safe_load(schema_path().read_text())
    for part, ref in (("task", "task"), ("optimizer", "optimizer")):
        sub = {**schema["$defs"][ref], "$defs": schema["$defs"]}
        obj = run["task"] if part == "task" else {"name": run["optimizer"]["name"], "hp": run["optimizer"]["hp"]}
        errs = list(jsonschema.Draft202012Validator(sub).iter_errors(obj))
        if errs:
            raise ConfigError(f"{source}: after overrides, {part}.{_where(errs[0])}: {errs[0].message}")
    allowed = _hp_names(entry.cls)
    unknown = sorted(set(run["optimizer"]["hp"]) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown hyperparameter(s) {unknown} for {o['name']} "
                          f"(allowed: {', '.join(sorted(allowed))})")
    run["optimizer"]["resolved_hp"] = optim.resolve_hp(o["name"], **run["optimizer"]["hp"])
    run["config_hash"] = config_hash(run)
    return run


def config_hash(run: dict) -> str:
    body = {k: v for k, v in run.items() if k != "config_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def grid(cfg: dict) -> list[tuple[str, str, int]]:
    """(task, label, seed) for every final run of the experiment."""
    return [(t, label, s) for t, task in cfg["tasks"].items() for label in task["optimizers"] for s in cfg["seeds"]]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m optirep.config experiments/X.yaml", file=sys.stderr)
        return 2
    cfg = load_experiment(argv[0])
    for t, label, s in grid(cfg):
        print(f"{t}\t{label}\tseed{s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
