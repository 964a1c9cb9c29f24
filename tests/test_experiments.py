"""Experiment YAMLs: every study file validates, bad configs fail with the key and the allowed values,
tuning budgets are equal, and the full-scale files carry the seeds' published settings.

    python -m pytest -q tests/test_experiments.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from optirep import config, optim, tuning

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
NOT_STUDIES = {"claims.yaml", "schema.yaml"}
STUDY_FILES = sorted(p for p in EXPERIMENTS.glob("*.yaml")
                     if p.name not in NOT_STUDIES and not p.name.startswith("workflow"))
FULL_FILES = [p for p in STUDY_FILES if p.stem.startswith("full_")]
FULL_STEMS = ["full_cifar10", "full_cifar100", "full_fashion_mnist", "full_shakespeare", "full_wikitext103",
              "full_enhanced_sgd", "full_planeswalker"]


def _ids(paths):
    return [p.stem for p in paths]


@pytest.fixture(scope="module")
def loaded() -> dict[str, dict]:
    return {p.stem: config.load_experiment(p) for p in STUDY_FILES}


# ----------------------------------------------------------------------------- every study validates
def test_the_full_study_files_exist_and_are_listed_in_the_workflow():
    assert sorted(p.stem for p in FULL_FILES) == sorted(FULL_STEMS)
    listed = yaml.safe_load((EXPERIMENTS / "workflow.yaml").read_text())["experiments"]
    assert sorted(Path(f).stem for f in listed) == sorted(FULL_STEMS)


@pytest.mark.parametrize("path", STUDY_FILES, ids=_ids(STUDY_FILES))
def test_study_file_validates_and_every_run_resolves(path):
    cfg = config.load_experiment(path)
    assert cfg["name"] == path.stem, "results/<name>/ must match the file name"
    runs = config.grid(cfg)
    assert runs, f"{path.name}: empty grid"
    # resolve_run re-validates hp names and builds the resolved hp of each (task, label) once.
    for task, label in {(t, lab) for t, lab, _ in runs}:
        run = config.resolve_run(cfg, task, label, cfg["seeds"][0], source=path.name)
        assert run["optimizer"]["resolved_hp"]["lr"] > 0


# ----------------------------------------------------------------------------- bad configs fail loudly
def _minimal() -> dict:
    return {
        "name": "bad", "scale": "test", "seeds": [0],
        "tuning": {"seeds": [100, 101], "budget": 16, "random_trials": 1,
                   "lr_sweep": {"per_decade": 2, "hard_min": 1e-6, "hard_max": 10.0}},
        "tasks": {"t": {"dataset": "digits8", "model": "np_mlp", "model_args": {"input_dim": 64},
                        "objective": "classification", "batch_size": 8, "steps": 2, "metric": "accuracy",
                        "optimizers": ["adamw"]}},
        "optimizers": {"adamw": {"name": "adamw", "hp": {"lr": 1e-3}},
                       "adamw_tuned": {"name": "adamw", "tune": True,
                                       "search_space": {"lr": {"min": 1e-4, "max": 1e-1, "scaling": "log"}}},
                       "v6_tuned": {"name": "biostatis_v6", "tune": True,
                                    "gain": {"keys": ["h_mean_mean", "e_mean_mean"], "match": "adamw_tuned"},
                                    "search_space": {"lr": {"min": 1e-4, "max": 1e-1, "scaling": "log"}}}},
    }


def _load(tmp_path: Path, cfg: dict) -> dict:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return config.load_experiment(f)


def test_minimal_config_is_valid(tmp_path):
    cfg = _minimal()
    cfg["tasks"]["t"]["optimizers"] += ["adamw_tuned", "v6_tuned"]
    assert _load(tmp_path, cfg)["tuning"]["select_on"] == "final_val"


@pytest.mark.parametrize("mutate, needles", [
    (lambda c: c.update(epochz=3), ["epochz", "allowed keys", "tasks"]),
    (lambda c: c.update(seeds="zero"), ["seeds", "array"]),
    (lambda c: c["tasks"]["t"].update(batch_size="64"), ["tasks.t.batch_size", "integer"]),
    (lambda c: c["tasks"]["t"].update(metric="top1"), ["tasks.t.metric", "allowed values", "accuracy"]),
    (lambda c: c["optimizers"]["adamw"].update(name="adamx"),
     ["optimizers.adamw.name", "unknown optimizer 'adamx'", "allowed values", "adamw", "sgd"]),
    (lambda c: c["optimizers"]["adamw"]["hp"].update(learning_rate=0.1),
     ["optimizers.adamw", "unknown hyperparameter 'learning_rate'", "allowed", "lr", "weight_decay"]),
    (lambda c: c["optimizers"]["adamw"].update(search_space={"betaz": {"min": 0.1, "max": 0.9}}, tune=True),
     ["unknown hyperparameter 'betaz'", "betas"]),
    (lambda c: c["tasks"]["t"].update(optimizers=["adamw", "adamw_tunde"]),
     ["tasks.t.optimizers", "unknown optimizer label 'adamw_tunde'", "allowed values: adamw"]),
    # the tuning protocol
    (lambda c: c["tuning"].update(seeds=[100, 0]),
     ["tuning.seeds [100, 0] overlap the final seeds [0] at [0]", "disjoint", "winner's curse"]),
    (lambda c: c["tuning"].update(seeds=[100]), ["tuning.seeds", "too short"]),
    (lambda c: c["tuning"].update(trials=4), ["tuning", "trials", "allowed keys", "budget", "lr_sweep"]),
    (lambda c: c["tuning"]["lr_sweep"].update(per_decade=1), ["tuning.lr_sweep.per_decade", "minimum of 2"]),
    (lambda c: c["optimizers"]["adamw_tuned"]["search_space"]["lr"].update(max=1e-2),
     ["optimizers.adamw_tuned.search_space.lr", "5-point grid", "at least 7 points",
      "different sizes"]),
    (lambda c: c["tuning"].update(budget=15), ["tuning.budget 15", "(7 grid points + 1 random trials) x 2 seeds = 16"]),
    (lambda c: c["tuning"]["lr_sweep"].update(hard_min=1e-3),
     ["optimizers.adamw_tuned.search_space.lr", "leaves the hard bounds"]),
    (lambda c: c["optimizers"]["v6_tuned"]["gain"].update(match="adamw"),
     ["optimizers.v6_tuned.gain.match", "'adamw' is not a tuned label", "allowed values: adamw_tuned"]),
    (lambda c: c.pop("tuning"), ["tune: true needs a top-level `tuning:` block"]),
    (lambda c: c["tasks"]["t"].update(gate={"optimizer": "sgd", "min": 0.5}),
     ["tasks.t.gate.optimizer", "'sgd'", "adamw"]),
    (lambda c: c["optimizers"]["adamw"].update(tune=True), ["optimizers.adamw", "search_space"]),
])
def test_bad_config_fails_naming_the_key_and_allowed_values(tmp_path, mutate, needles):
    cfg = _minimal()
    mutate(cfg)
    with pytest.raises(config.ConfigError) as exc:
        _load(tmp_path, cfg)
    msg = str(exc.value)
    assert "bad.yaml" in msg
    for needle in needles:
        assert needle in msg, f"{needle!r} missing from:\n{msg}"


# ----------------------------------------------------------------------------- equal tuning budget
def _tuned(cfg: dict, task: dict) -> list[str]:
    return [lab for lab in task["optimizers"] if cfg["optimizers"][lab].get("tune")]


@pytest.mark.parametrize("path", STUDY_FILES, ids=_ids(STUDY_FILES))
def test_every_tuned_label_of_a_task_gets_the_same_budget(path, loaded):
    cfg = loaded[path.stem]
    for tname, task in cfg["tasks"].items():
        tuned = _tuned(cfg, task)
        if not tuned:
            continue
        t = cfg["tuning"]
        assert not set(t["seeds"]) & set(cfg["seeds"]), f"{path.name}: tuning seeds overlap the final seeds"
        grids = {lab: tuning.lr_grid(cfg["optimizers"][lab], t["lr_sweep"]["per_decade"]) for lab in tuned}
        assert len({len(g) for g in grids.values()}) == 1 and len(grids[tuned[0]]) >= 7, grids
        dims = {lab: sorted(cfg["optimizers"][lab]["search_space"]) for lab in tuned}
        assert len({len(d) for d in dims.values()}) == 1, f"{path.name}: {tname}: search spaces differ in size: {dims}"
        assert tuning.max_points(t) >= len(grids[tuned[0]]), "the budget covers the initial sweep"
        for lab in tuned:
            o = cfg["optimizers"][lab]
            space = o["search_space"]
            best = grids[lab][len(grids[lab]) // 2]
            trials = tuning.random_trials(cfg, lab, best)
            assert len(trials) == t["random_trials"]
            step = 10 ** (1 / t["lr_sweep"]["per_decade"])
            for hp in trials:  # random trials: lr within one grid step of the best, the rest inside its box
                assert best / step * (1 - 1e-9) <= hp["lr"] <= best * step * (1 + 1e-9)
                for k, dim in space.items():
                    if k == "lr":
                        continue
                    if "feasible_points" in dim:
                        assert hp[k] in dim["feasible_points"]
                    else:
                        assert dim["min"] <= hp[k] <= dim["max"], (lab, k, hp[k])
            gain = o.get("gain")
            if gain:  # the gain's diagnostics exist on the real optimizer
                w = torch.nn.Parameter(torch.randn(4, 3))
                opt = optim.build(o["name"], [w], **{**tuning.base_hp(o), "lr": best})
                for _ in range(2):
                    w.grad = torch.randn_like(w) * 1e-3
                    opt.step()
                diag = opt.diagnostics()  # reading resets the means: once
                missing = [k for k in gain["keys"] if k not in diag]
                assert not missing, f"{path.name}: {lab}: {o['name']} emits no {missing} (has {sorted(diag)})"
                assert gain["match"] in task["optimizers"]


# ----------------------------------------------------------------------------- the full-scale study
@pytest.mark.parametrize("path", FULL_FILES, ids=_ids(FULL_FILES))
def test_full_file_protocol(path, loaded):
    cfg = loaded[path.stem]
    assert cfg["scale"] == "full scale, GPU"
    assert cfg["device"] == "auto"
    assert len(cfg["seeds"]) >= 5, "anchors A.3: at least 5 seeds per final configuration"
    assert cfg["tuning"]["budget"] == 32 and len(cfg["tuning"]["seeds"]) >= 2
    assert len(cfg.get("description", "")) > 200, "the description states the seed's setup and source"
    for tname, task in cfg["tasks"].items():
        gate = task.get("gate")
        assert gate and ("min" in gate or "max" in gate), f"{tname}: every full task has a baseline gate"
        gate_name = cfg["optimizers"][gate["optimizer"]]["name"]
        assert gate_name in optim.BASELINES, f"{tname}: the gate must be on a torch baseline, not {gate_name}"
        assert ("max" in gate) == (task["metric"] in ("perplexity", "recon_mse"))
        tuned = _tuned(cfg, task)
        assert tuned, f"{tname}: no equally tuned labels"
        assert any(cfg["optimizers"][lab]["name"] in optim.BASELINES for lab in tuned), \
            f"{tname}: the baselines are tuned too (anchors A.2)"
        published = [lab for lab in task["optimizers"] if not cfg["optimizers"][lab].get("tune")]
        assert published, f"{tname}: no as-published label"


@pytest.mark.parametrize("path", STUDY_FILES, ids=_ids(STUDY_FILES))
def test_lr_from_reads_diagnostics_its_source_optimizer_emits(path, loaded):
    cfg = loaded[path.stem]
    for tname, task in cfg["tasks"].items():
        for lab in task["optimizers"]:
            spec = cfg["optimizers"][lab].get("lr_from")
            if not spec:
                continue
            src = spec["label"]
            assert src in task["optimizers"], f"{tname}.{lab}: lr_from source {src!r} must run in the same task"
            assert not cfg["optimizers"][src].get("tune"), f"{tname}.{lab}: lr_from a tuned label is ambiguous"
            # The real optimizer on a tiny model: derive-hp will look these keys up in metrics.json.
            src_cfg = cfg["optimizers"][src]
            w = torch.nn.Parameter(torch.randn(4, 3))
            opt = optim.build(src_cfg["name"], [w], **src_cfg.get("hp", {}))
            for _ in range(2):
                w.grad = torch.randn_like(w) * 1e-3
                opt.step()
            diag = opt.diagnostics()
            missing = [k for k in spec["keys"] if k not in diag]
            assert not missing, f"{tname}.{lab}: {src_cfg['name']} emits no {missing} (has {sorted(diag)})"


# The seeds' published settings (seeds-spec 1(c), 1(e), 2(e), 4(c)); a label that drifts from them is a bug.
PUBLISHED = {
    ("full_cifar10", "adamw_published"): ("adamw", {"lr": 3e-4, "weight_decay": 1e-2}),
    ("full_cifar10", "biostatis_v6_published"): ("biostatis_v6", {
        "lr": 1e-3, "weight_decay": 1e-2, "homeo_rate": 0.5, "coherence_target": 0.8, "energy_target": 1e-4,
        "lambda_energy": 0.1}),
    ("full_cifar10", "adamw_lr_matched"): ("adamw", {"lr": 1.28e-3}),
    ("full_cifar10", "neuroplastic_locked"): ("neuroplastic", {"lr": 0.1, "warmup_epochs": 2, "plasticity_scale": 2.0}),
    ("full_cifar100", "biostatis_v6_published"): ("biostatis_v6", {"lr": 1e-3, "homeo_rate": 0.5, "energy_target": 1e-4}),
    ("full_shakespeare", "adamw_published"): ("adamw", {"lr": 1e-3, "weight_decay": 1e-2}),
    ("full_shakespeare", "biostatis_v6g_published"): ("biostatis_v6_global", {
        "lr": 2e-3, "weight_decay": 0.05, "homeo_rate": 0.03, "coherence_target": 0.85, "energy_target": 5e-4,
        "lambda_energy": 0.5, "flip_threshold": 0.15, "ascent_strength": 0.05}),
    ("full_fashion_mnist", "neuroplastic_locked"): ("neuroplastic", {"lr": 0.1, "warmup_epochs": 2, "plasticity_scale": 2.0}),
    ("full_fashion_mnist", "neuroplastic_gradonly"): ("neuroplastic_gradonly", {"lr": 0.1}),
    ("full_enhanced_sgd", "enhanced_sgd_published"): ("enhanced_sgd", {"lr": 0.01, "momentum": 0.9}),
    ("full_enhanced_sgd", "sgd_published"): ("sgd", {"lr": 0.01, "momentum": 0.9}),
    ("full_enhanced_sgd", "adam_published"): ("adam", {"lr": 1e-3}),
    ("full_enhanced_sgd", "sgd_voc_published"): ("sgd", {"lr": 1e-3, "momentum": 0.0}),
}

TASK_SETUP = {
    ("full_cifar10", "v6_protocol"): {"batch_size": 128, "epochs": 5, "lr_schedule": "none",
                                      "data_args": {"val_size": 5000, "normalize": "v6", "augment": True},
                                      "model_args": {"num_classes": 10, "cifar_stem": False}},
    ("full_cifar100", "v6_protocol"): {"batch_size": 128, "epochs": 20, "lr_schedule": "none",
                                       "data_args": {"val_size": 5000, "normalize": "v6", "augment": True},
                                       "model_args": {"num_classes": 100, "cifar_stem": False}},
    ("full_shakespeare", "gpt1"): {"batch_size": 16, "steps": 20000, "eval_batches": 300, "metric": "perplexity"},
    ("full_enhanced_sgd", "mnist_2ep"): {"batch_size": 64, "epochs": 2, "model": "grn_simplecnn"},
    ("full_enhanced_sgd", "voc_10ep"): {"batch_size": 4, "eval_batch_size": 4, "epochs": 10, "model": "fcn_resnet50",
                                        "objective": "segmentation", "metric": "pixel_accuracy",
                                        "data_args": {"size": 224, "normalize": "imagenet"}},
    ("full_fashion_mnist", "mnist"): {"batch_size": 128, "epochs": 10, "model": "np_mlp"},
}


@pytest.mark.parametrize("key", sorted(PUBLISHED), ids=lambda k: f"{k[0]}-{k[1]}")
def test_published_labels_carry_the_seed_settings(key, loaded):
    cfg = loaded[key[0]]
    name, hp = PUBLISHED[key]
    o = cfg["optimizers"][key[1]]
    assert o["name"] == name and not o.get("tune")
    for k, v in hp.items():
        assert o["hp"][k] == pytest.approx(v), f"{key}: {k} = {o['hp'].get(k)}, seed {v}"


@pytest.mark.parametrize("key", sorted(TASK_SETUP), ids=lambda k: f"{k[0]}-{k[1]}")
def test_seed_protocol_tasks_match_the_seed(key, loaded):
    task = loaded[key[0]]["tasks"][key[1]]
    for k, v in TASK_SETUP[key].items():
        assert task.get(k) == v, f"{key}: {k} = {task.get(k)!r}, seed {v!r}"


def test_low_data_fractions_are_separate_tasks(loaded):
    tasks = loaded["full_fashion_mnist"]["tasks"]
    fractions = sorted(t["data_args"]["train_fraction"] for n, t in tasks.items() if n.startswith("fmnist_frac"))
    assert fractions == [0.1, 0.25, 0.5, 1.0]
    labels = {tuple(t["optimizers"]) for n, t in tasks.items() if n.startswith("fmnist_frac")}
    assert len(labels) == 1, "every fraction runs the same optimizers"


def test_closure_labels_match_the_registry(loaded):
    cfg = loaded["full_enhanced_sgd"]
    modes = {}
    for lab, o in cfg["optimizers"].items():
        if o["name"].startswith("enhanced_sgd"):
            run = config.resolve_run(cfg, next(iter(cfg["tasks"])), lab, 0)
            modes[lab] = run["optimizer"]["closure"]
    assert modes["enhanced_sgd_published"] is True and modes["enhanced_sgd_noclosure_published"] is False
    assert optim.spec("enhanced_sgd").needs_closure


# ----------------------------------------------------------------------------- claims point at real runs
def _claim_blocks():
    """Every comparison a claim names: test / full_scale, the questions' partial blocks completed from
    `test` as optirep.report.claims does, and an interaction's partner task."""
    from optirep.report.claims import _spec

    claims = yaml.safe_load((EXPERIMENTS / "claims.yaml").read_text())["claims"]
    out = [(c["id"], key, c[key]) for c in claims for key in ("test", "full_scale") if c.get(key)]
    for c in (c for c in claims if c.get("test")):
        for key in ("replication", "attribution", "lr_control"):
            if c.get(key):
                out.append((c["id"], key, _spec(c["test"], c[key])))
                if c.get("interaction"):
                    out.append((c["id"], f"{key}-interaction", {**_spec(c["test"], c[key]), "task": c["interaction"]["task"]}))
    return out


@pytest.mark.parametrize("cid,key,block", _claim_blocks(), ids=[f"{c}-{k}" for c, k, _ in _claim_blocks()])
def test_every_claim_block_names_an_experiment_task_and_labels_that_exist(loaded, cid, key, block):
    """A typo here would silently turn a measured claim into 'not run'."""
    assert block["experiment"] in loaded, f"{cid}.{key}: no experiments/{block['experiment']}.yaml"
    tasks = loaded[block["experiment"]]["tasks"]
    for role, task in (("method", block["task"]), ("baseline", block.get("baseline_task", block["task"]))):
        assert task in tasks, f"{cid}.{key}: task {task!r} not in {block['experiment']} ({sorted(tasks)})"
        # a timing arm may be a variant label[key=value] of a task's label (tests/test_claims_timing.py
        # checks that the workflow times exactly that variant)
        label = config.variant_label(block[role])
        assert label in tasks[task]["optimizers"], (
            f"{cid}.{key}: {role} label {block[role]!r} not run on {block['experiment']}/{task} "
            f"({tasks[task]['optimizers']})")


def test_the_cpu_workflow_covers_every_experiment_a_claim_test_uses():
    listed = {Path(f).stem for f in yaml.safe_load((EXPERIMENTS / "workflow-cpu.yaml").read_text())["experiments"]}
    used = {b["experiment"] for _, key, b in _claim_blocks() if key == "test"}
    assert used <= listed, f"claims test experiments not in workflow-cpu.yaml: {sorted(used - listed)}"
