"""The CPU study on real MNIST / Fashion-MNIST keeps the seeds' protocols: what may differ from the GPU study is listed.

"seed scale, CPU" tasks must equal their full-scale twins in data, model, batch size, epochs and the
published optimizer settings; the V6 and Planeswalker proxies must keep the seed's model, batch size
and learning rates, and the Planeswalker autoencoder must really compress (about 10x).
"""

from __future__ import annotations

import pytest
import yaml

from optirep import config, models
from test_data_fixtures import REPO

EXP = REPO / "experiments"
PROTOCOL = ("dataset", "data_args", "model", "model_args", "objective", "batch_size", "metric", "eval_batch_size")


def _load(name: str) -> dict:
    return config.load_experiment(EXP / f"{name}.yaml")


# (cpu experiment, full experiment, {cpu task: (its full-scale twin, keys allowed to differ)})
TWINS = [("cpu_neuroplastic_fmnist", "full_fashion_mnist", {}),
         ("cpu_enhanced_sgd_mnist", "full_enhanced_sgd",
          {"mnist_2ep": ("mnist_2ep", {"optimizers", "gate"}),
           "mnist_3ep": ("mnist_25ep", {"epochs", "eval_every", "optimizers", "gate", "description"})})]


@pytest.mark.parametrize("cpu,full,twins", TWINS, ids=[t[0] for t in TWINS])
def test_seed_scale_tasks_equal_their_full_scale_twins(cpu, full, twins):
    c, f = _load(cpu), _load(full)
    assert c["scale"] == "seed scale, CPU" and c["device"] == "cpu" and c["threads"] == 1
    assert len(c["seeds"]) >= 5
    for tname, task in c["tasks"].items():
        twin_name, allowed = twins.get(tname, (tname, set()))
        twin = f["tasks"][twin_name]
        for key in (*PROTOCOL, "epochs", "gate", "optimizers"):
            if key not in allowed:
                assert task.get(key) == twin.get(key), f"{cpu}.{tname}: {key} {task.get(key)!r} != {full}'s {twin.get(key)!r}"
        assert set(task["optimizers"]) <= set(twin["optimizers"])
        assert task["epochs"] <= twin["epochs"]
        for lab in task["optimizers"]:
            o, p = c["optimizers"][lab], f["optimizers"][lab]
            assert (o["name"], o.get("hp"), o.get("closure"), o.get("search_space")) == \
                   (p["name"], p.get("hp"), p.get("closure"), p.get("search_space")), f"{cpu}: label {lab} drifted"


def test_neuroplastic_runs_under_a_minute_so_ten_seeds():
    assert _load("cpu_neuroplastic_fmnist")["seeds"] == list(range(10))


def test_v6_proxy_keeps_the_seed_model_batch_and_learning_rates():
    c, f = _load("cpu_vision_fmnist"), _load("full_cifar10")
    task, seed = c["tasks"]["resnet18_fmnist32"], f["tasks"]["v6_protocol"]
    assert task["dataset"] == "fashion_mnist" and task["data_args"] == {"normalize": "neuroplastic", "pad": 2,
                                                                          "channels": 3, "augment": True}
    for key in ("model", "model_args", "batch_size", "objective", "metric"):
        assert task[key] == seed[key], key
    assert 0 < task["steps"] <= 1955  # the seed's 5 CIFAR-10 epochs of 391 steps
    for lab in ("adamw_published", "biostatis_v6_published", "neuroplastic_locked"):
        assert c["optimizers"][lab]["hp"] == f["optimizers"][lab]["hp"], lab
    # the input the model sees: 3 x 32 x 32, as CIFAR-10
    model = models.build_model(task["model"], **task["model_args"])
    assert model.conv1.in_channels == 3


def test_planeswalker_proxy_compresses_and_compares_like_with_like():
    c = _load("cpu_planeswalker_fmnist")
    terms = {}
    for tname, task in c["tasks"].items():
        ae = models.build_model(task["model"], **task["model_args"])
        assert ae.latent_dim <= 784 // 9, f"{tname}: {ae.latent_dim} latent values do not compress 784 pixels ~10x"
        assert task["data_args"]["pad"] == 2 and task["model_args"]["input_size"] == 32
        terms[len(task["loss_terms"])] = tname
        sums = [lab for lab in task["optimizers"] if c["optimizers"][lab].get("multiplexer", {}).get("mode") != "multiplex"]
        muxes = [lab for lab in task["optimizers"] if lab not in sums]
        assert len(sums) == len(muxes) >= 1
        for s in sums:  # each summed label has a multiplexed twin with the same optimizer, hp and budget
            m = s.replace("sum", "multiplex")
            strip = lambda o: {k: v for k, v in o.items() if k not in ("multiplexer", "description")}  # noqa: E731
            assert strip(c["optimizers"][s]) == strip(c["optimizers"][m])
    # the task PW-1 reads runs with the seed's six terms; the 2- and 4-term variants (read by no claim) were
    # dropped from the CPU run by the file's stated shrink rule and stay in the GPU study
    pw1 = next(cl for cl in yaml.safe_load((EXP / "claims.yaml").read_text())["claims"] if cl["id"] == "PW-1")
    assert pw1["test"]["experiment"] == "cpu_planeswalker_fmnist" and terms.get(6) == pw1["test"]["task"]
    full_terms = {len(t["loss_terms"]) for t in _load("full_planeswalker")["tasks"].values()}
    assert {2, 4, 6} <= full_terms
    # the failure line is written down before any run (the file's header) and recorded by every run
    text = (EXP / "cpu_planeswalker_fmnist.yaml").read_text()
    assert "extra.mse_over_mean_image >= 1" in text.split("\nname:")[0]


def test_the_cpu_workflow_runs_the_real_data_studies_only():
    wf = yaml.safe_load((EXP / "workflow-cpu.yaml").read_text())
    names = [yaml.safe_load((REPO / f).read_text())["name"] for f in wf["experiments"]]
    assert {"cpu_neuroplastic_fmnist", "cpu_enhanced_sgd_mnist", "cpu_vision_fmnist", "cpu_planeswalker_fmnist"} <= set(names)
    for f in wf["experiments"]:
        for tname, task in _load(yaml.safe_load((REPO / f).read_text())["name"])["tasks"].items():
            assert task["dataset"] not in ("digits8", "digits32", "mnist1d"), f"{f}: {tname} is a stand-in task"
    assert set(wf["fetch"]) == {"mnist", "fashion_mnist"}


def test_set_steps_replaces_epochs_and_back():
    """`--set task.steps=N` on an epochs task (and the reverse) sizes the run by the override alone."""
    np_run = config.resolve_run(_load("cpu_neuroplastic_fmnist"), "mnist", "sgd_tuned", 0, ["task.steps=5"])
    assert np_run["task"]["steps"] == 5 and "epochs" not in np_run["task"]
    v6_run = config.resolve_run(_load("cpu_vision_fmnist"), "resnet18_fmnist32", "adamw_published", 0, ["task.epochs=1"])
    assert v6_run["task"]["epochs"] == 1 and "steps" not in v6_run["task"]
