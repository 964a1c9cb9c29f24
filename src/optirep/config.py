"""Experiment YAMLs: load, validate once (JSON Schema + registry checks), resolve one run.

    python -m optirep.config experiments/smoke.yaml     # validate and print the resolved grid

Config is data: the JSON Schema shipped in the package (`optirep/schema/experiment.yaml`; in the
repository `experiments/schema.yaml` links to it) checks the shape (unknown keys are errors), then
`check_semantics` checks names against the registries (optimizers, models, datasets, hyperparameter
names), so a typo fails before any training with the key and the allowed values in the message.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

#: The experiment schema as package data (works in a non-editable install; read with importlib.resources).
DEFAULT_SCHEMA = resources.files("optirep") / "schema" / "experiment.yaml"
SEGMENTATION_METRICS = ("pixel_accuracy", "miou")
#: Orientation of every task metric (the schema's `metric` enum), for training, aggregation and verdicts.
HIGHER_IS_BETTER = {"accuracy": True, "perplexity": False, "recon_mse": False, "pixel_accuracy": True, "miou": True}


class ConfigError(ValueError):
    """An experiment file or override is invalid; the message names the file and key."""


class YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-3` and `1.0e8` as numbers (YAML 1.2; PyYAML's YAML 1.1 makes them strings)."""


YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str):
    """Parse YAML text the way users write numbers (see YAMLLoader); what every experiment reader uses."""
    return yaml.load(text, Loader=YAMLLoader)  # noqa: S506 - a SafeLoader subclass


def schema_path(experiment_path: Path | None = None):
    """schema.yaml beside the experiment file, else the package's (a Path or importlib Traversable)."""
    if experiment_path is not None:
        beside = Path(experiment_path).resolve().parent / "schema.yaml"
        if beside.exists():
            return beside
    return DEFAULT_SCHEMA


@functools.lru_cache(maxsize=8)
def _read_schema(schema_file) -> dict:
    return load_yaml(schema_file.read_text())


def load_schema(schema_file=None) -> dict:
    """The parsed experiment schema (`schema_path()`'s by default); parsed once per process."""
    schema_file = schema_file or DEFAULT_SCHEMA
    return copy.deepcopy(_read_schema(Path(schema_file) if isinstance(schema_file, str) else schema_file))


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_schema(cfg: dict, source: str, schema_file: Path | None = None) -> None:
    schema = load_schema(schema_file)
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
        try:  # types and ranges of the given hp (lr > 0 and finite, betas in [0, 1), ...)
            from optirep.runio import check_hp

            check_hp(o["name"], o.get("hp", {}))
        except ConfigError as exc:
            problems.append(str(exc).replace("optimizer.hp", f"optimizers.{label}.hp", 1))
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
        cfg = load_yaml(path.read_text())
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


#: What `--set optimizer.<key>` and `--set run.<key>` may set (task.* keys are checked by the schema).
OVERRIDABLE = {"optimizer": ("hp", "closure"), "run": ("device", "threads")}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. task.steps=100 or optimizer.hp.lr=0.01")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts or parts[0] not in ("task", "optimizer", "run"):
        raise ConfigError(f"--set {text!r}: key must start with task., optimizer. or run. (got {key!r})")
    allowed = OVERRIDABLE.get(parts[0])
    if allowed is not None and (len(parts) < 2 or parts[1] not in allowed
                                or (parts[1] != "hp" and len(parts) != 2) or (parts[1] == "hp" and len(parts) != 3)):
        keys = ", ".join(f"{parts[0]}.{k}" + (".<name>" if k == "hp" else "") for k in allowed)
        raise ConfigError(f"--set {text!r}: unknown key {key.strip()!r} (allowed: {keys}, task.<key>)")
    try:
        value = load_yaml(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc})") from None
    return parts, value


def request_run(cfg: dict, task: str, label: str, seed: int, overrides: list[str] = (),
                hp_override: dict | None = None, source: str = "<experiment>") -> dict:
    """The run as the experiment and the command line ask for it, before the registry resolves it.

    Pure data (no torch import): `resolve_run` completes it; `optirep.launch` compares it with a
    finished run's config.json to recognise the run without importing torch. `optimizer.closure`
    is present only where the experiment or an override sets it.
    """
    if task not in cfg["tasks"]:
        raise ConfigError(f"{source}: unknown task {task!r} (allowed values: {', '.join(cfg['tasks'])})")
    t = copy.deepcopy(cfg["tasks"][task])
    if label not in t["optimizers"]:
        raise ConfigError(f"{source}: task {task!r} has no optimizer {label!r} "
                          f"(allowed values: {', '.join(t['optimizers'])})")
    o = copy.deepcopy(cfg["optimizers"][label])
    run = {
        "experiment": cfg["name"], "scale": cfg["scale"], "task_name": task, "label": label, "seed": seed,
        "device": cfg.get("device", "auto"), "threads": cfg.get("threads"),
        "task": t,
        "optimizer": {"name": o["name"], "hp": dict(o.get("hp", {}))},
    }
    if "closure" in o:
        run["optimizer"]["closure"] = o["closure"]
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
    return run


# ----------------------------------------------------------------------------- label variants
#: `label` or `label[key=value,...]`: a task's optimizer label, optionally with optimizer hyperparameters
#: overridden (the timing stage's arms, e.g. `adamw_published[fused=true]`, `biostatis_v6[foreach=false]`).
VARIANT_RE = re.compile(r"^\s*([a-z0-9_]+)\s*(?:\[(.*)\])?\s*$", re.S)
_HP_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VARIANT_EXAMPLE = "label or label[key=value,...], e.g. adamw_published[fused=true]"


def _split_top(text: str) -> list[str]:
    """Split at the commas outside [...] / {...} (a value may be a YAML flow list: betas=[0.9, 0.99])."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_variant(entry: Any, where: str = "optimizers") -> tuple[str, dict[str, Any]]:
    """`label[key=value,...]` -> (label, {key: value}); a plain label -> (label, {}).

    Values are YAML (load_yaml: `true`, `1e-3`, `[0.9, 0.99]`). Raises ConfigError naming `where`, the
    entry and what is wrong (not a label, empty brackets, a part without `=`, a bad or repeated key, a
    value that is not YAML or is empty). Pure string work: no registry, no torch.
    """
    m = VARIANT_RE.match(entry) if isinstance(entry, str) else None
    if m is None:
        raise ConfigError(f"{where}: {entry!r} is not an optimizer label entry (expected {VARIANT_EXAMPLE})")
    label, inner = m.group(1), m.group(2)
    hp: dict[str, Any] = {}
    if inner is None:
        return label, hp
    if not inner.strip():
        raise ConfigError(f"{where}: {entry!r}: empty [] (expected {VARIANT_EXAMPLE}, or the plain label)")
    for part in _split_top(inner):
        key, eq, raw = part.partition("=")
        key = key.strip()
        if not eq or not _HP_KEY_RE.match(key):
            raise ConfigError(f"{where}: {entry!r}: {part.strip()!r} is not key=value (expected {VARIANT_EXAMPLE})")
        if key in hp:
            raise ConfigError(f"{where}: {entry!r}: hyperparameter {key!r} given twice")
        if not raw.strip():
            raise ConfigError(f"{where}: {entry!r}: hyperparameter {key!r} has no value")
        try:
            hp[key] = load_yaml(raw)
        except yaml.YAMLError as exc:
            why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{where}: {entry!r}: the value of {key!r} is not valid YAML ({why})") from None
    return label, hp


def variant_label(entry: Any, where: str = "optimizers") -> str:
    """The task's optimizer label of an entry (`adamw[fused=true]` -> `adamw`); ConfigError if malformed."""
    return parse_variant(entry, where)[0]


def check_variant(cfg: dict, task: str, entry: str, source: str = "<experiment>") -> tuple[str, dict[str, Any]]:
    """Parse `entry` and check it against experiment `cfg`: its label is one of `task`'s optimizers and each
    override is a hyperparameter the label's optimizer class accepts, of an allowed type and range
    (runio.check_hp). Returns (label, overrides); raises ConfigError naming the entry, the key and the
    allowed names.
    """
    from optirep import optim
    from optirep.runio import check_hp

    label, hp = parse_variant(entry, source)
    if task not in cfg["tasks"]:
        raise ConfigError(f"{source}: unknown task {task!r} (allowed values: {', '.join(cfg['tasks'])})")
    allowed_labels = cfg["tasks"][task]["optimizers"]
    if label not in allowed_labels:
        what = f" (in {entry!r})" if hp else ""
        raise ConfigError(f"{source}: task {task!r} has no optimizer {label!r}{what} "
                          f"(allowed values: {', '.join(allowed_labels)})")
    name = cfg["optimizers"][label]["name"]
    allowed = _hp_names(optim.spec(name).cls)
    for key in hp:
        if key not in allowed:
            raise ConfigError(f"{source}: {entry!r}: unknown hyperparameter {key!r} for {label} ({name}) "
                              f"(allowed: {', '.join(sorted(allowed))})")
    try:
        check_hp(name, hp)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {entry!r}: {exc}") from None
    return label, hp


def class_defaults(cls: type) -> dict[str, Any]:
    """Every keyword of `cls.__init__` with a default (except params), as JSON-ready values.

    Tuples become lists (as JSON writes them); a default JSON cannot hold is recorded as its repr.
    """
    out: dict[str, Any] = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "params") or p.default is inspect.Parameter.empty:
            continue
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        v = p.default
        try:
            out[name] = json.loads(json.dumps(v))
        except (TypeError, ValueError):
            out[name] = repr(v)
    return out


def resolve_run(cfg: dict, task: str, label: str, seed: int, overrides: list[str] = (),
                hp_override: dict | None = None, source: str = "<experiment>") -> dict:
    """The complete config of one training run (what config.json records).

    `optimizer.resolved_hp` is every keyword the optimizer class runs with: its signature defaults,
    overridden by the registry entry's defaults, overridden by the run's hp; `config_hash` covers it,
    so a change of any default is a different run.
    """
    from optirep import optim

    run = request_run(cfg, task, label, seed, overrides, hp_override, source)
    o = run["optimizer"]
    entry = optim.spec(o["name"])
    o.setdefault("closure", entry.needs_closure)
    # Re-validate the task and optimizer after overrides with the same schema.
    schema = load_schema()
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
    run["optimizer"]["resolved_hp"] = {**class_defaults(entry.cls),
                                       **optim.resolve_hp(o["name"], **run["optimizer"]["hp"])}
    run["config_hash"] = config_hash(run)
    return run


def config_hash(run: dict) -> str:
    body = {k: v for k, v in run.items() if k != "config_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- results layout
SPEC_PREFIX = "cfg-"
SPEC_PATTERN = r"cfg-[0-9a-f]{10}"


def run_spec(cfg: dict, task: str, label: str) -> dict:
    """Everything of an experiment file that the runs of (task, label) depend on (docs/DESIGN.md "Results tree").

    The experiment's name, scale, device and threads, the whole task block, the label's optimizer
    block (without its description), the tuning block for a tuned label (tuning seeds included), the
    matched label's spec for a tuned label with `gain.match` (its sweep extends to cover that label's), and
    the source label's spec for an effective-LR control (`lr_from`). Final seeds are not part of it (they
    are path levels). The tuning tree of a tuned label (`tune/<task>/<label>/<spec>`) uses the same spec:
    its selection is exactly what the label's final runs depend on beyond their own config.
    """
    t, o = cfg["tasks"][task], cfg["optimizers"][label]
    spec = {"experiment": cfg["name"], "scale": cfg["scale"], "device": cfg.get("device", "auto"),
            "threads": cfg.get("threads"), "task": t,
            "optimizer": {k: v for k, v in o.items() if k != "description"}}
    if o.get("tune"):
        # the whole tuning block, with load_experiment's defaults (so raw and loaded files hash alike)
        spec["tuning"] = {"select_on": "final_val", "sampler_seed": 0, **(cfg.get("tuning") or {})}
        match = (o.get("gain") or {}).get("match")
        if match and match in cfg["optimizers"] and match != label:
            spec["match_spec"] = spec_hash(cfg, task, match)
    if o.get("lr_from"):
        spec["lr_from_spec"] = spec_hash(cfg, task, o["lr_from"]["label"])
    return spec


def spec_hash(cfg: dict, task: str, label: str) -> str:
    """`cfg-<10 hex>`: the results-tree level that keeps runs of different configs apart."""
    body = json.dumps(run_spec(cfg, task, label), sort_keys=True, default=str)
    return SPEC_PREFIX + hashlib.sha256(body.encode()).hexdigest()[:10]


def label_dir(results: str | Path, kind: str, cfg: dict, task: str, label: str, legacy: bool = True) -> Path:
    """`<results>/<kind>/<task>/<label>/<spec>` (kind: runs, tune, derived) for the current config.

    legacy: when that folder does not exist but `<results>/<kind>/<task>/<label>` holds results written
    before the spec level existed (`seed*` or `trial*` folders, or a tuning tree's `lr/`, `random/`,
    `bracket/`, `sweep.json`, `selected.json` directly), return that one, so result trees of earlier
    versions stay readable.
    """
    base = Path(results) / kind / task / label
    current = base / spec_hash(cfg, task, label)
    if legacy and not current.exists() and base.is_dir() and any(map(_legacy_entry, base.iterdir())):
        return base
    return current


_LEGACY_TUNE_ENTRIES = {"lr", "random", "bracket", "sweep.json", "selected.json"}


def _legacy_entry(p: Path) -> bool:
    """An entry of `<kind>/<task>/<label>` written before the spec level existed."""
    return p.name in _LEGACY_TUNE_ENTRIES or (p.is_dir() and p.name.startswith(("seed", "trial")))


def grid(cfg: dict) -> list[tuple[str, str, int]]:
    """(task, label, seed) for every final run of the experiment."""
    return [(t, label, s) for t, task in cfg["tasks"].items() for label in task["optimizers"] for s in cfg["seeds"]]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="optirep validate",
                                description="Validate an experiment YAML (schema + registry checks) and print its "
                                            "run grid: one line per (task, optimizer label, seed).")
    p.add_argument("experiment", help="experiments/X.yaml")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = load_experiment(a.experiment)
    for t, label, s in grid(cfg):
        print(f"{t}\t{label}\tseed{s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
