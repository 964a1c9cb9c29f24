"""optirep as a package: exports, create_optimizer, CLI --version/--help, packaged schema, dependency
ranges, provenance (resolved hyperparameters, commit of an installed copy, weights-only resume),
checkpoint period, and a non-editable install into a fresh virtualenv."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from test_train import EXPERIMENT, run_cfg, write_experiment
from torch import nn

import optirep
from optirep import cli, config, optim, provenance
from optirep import train as trainmod

ROOT = Path(__file__).resolve().parents[1]
BIO = sorted(n for n in optim.available() if optim.spec(n).cls.__module__.startswith("optirep."))


# ----------------------------------------------------------------------------- exports and create_optimizer
def test_classes_are_exported_where_users_look():
    from optirep.losses import Planeswalker
    from optirep.optim import BiostatisV6, EnhancedSGD, NeuroPlastic, create_optimizer

    assert {optim.spec(n).cls for n in BIO} == {BiostatisV6, EnhancedSGD, NeuroPlastic}
    assert Planeswalker.__module__ == "optirep.losses.planeswalker" and callable(create_optimizer)
    assert {"BiostatisV6", "EnhancedSGD", "NeuroPlastic", "create_optimizer"} <= set(optim.__all__)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.fc1 = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.head(self.norm(self.fc1(self.emb(x).mean(1))))


@pytest.mark.parametrize("name", [*BIO, "adamw", "sgd"])
def test_create_optimizer_puts_biases_and_norms_in_an_undecayed_group(name):
    net = _Net()
    opt = optim.create_optimizer(net, name, weight_decay=0.05, lr=0.01)
    assert type(opt) is optim.spec(name).cls
    names = {id(p): n for n, p in net.named_parameters()}
    groups = [(g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in opt.param_groups]
    assert groups == [(0.05, ["emb.weight", "fc1.weight", "head.weight"]),
                      (0.0, ["fc1.bias", "head.bias", "norm.bias", "norm.weight"])]
    assert all(g["lr"] == 0.01 for g in opt.param_groups)
    x = torch.randint(0, 10, (4, 5))

    def closure():
        opt.zero_grad()
        loss = net(x).square().mean()
        loss.backward()
        return loss

    before = net.fc1.weight.detach().clone()
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step(closure) if optim.spec(name).needs_closure else (closure(), opt.step())
    assert not torch.equal(before, net.fc1.weight)
    assert not [w for w in caught if "param_order" in str(w.message)]  # layer labels in model order


def test_create_optimizer_options_and_errors():
    net = _Net()
    # the entry's default decay (BiostatisV6: the seed's 0.01) when weight_decay is not given
    opt = optim.create_optimizer(net, "biostatis_v6")
    assert [g["weight_decay"] for g in opt.param_groups] == [optim.spec("biostatis_v6").defaults["weight_decay"], 0.0]
    one = optim.create_optimizer(net, "adamw", weight_decay=0.1, no_decay=None)
    assert len(one.param_groups) == 1 and len(one.param_groups[0]["params"]) == 7  # frozen excluded
    named = optim.create_optimizer(net, "adamw", weight_decay=0.1, no_decay=("emb",))
    assert len(named.param_groups[0]["params"]) == 2  # fc1.weight, head.weight
    zero = optim.create_optimizer(net, "adamw", weight_decay=0.0)
    assert len(zero.param_groups) == 1
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        optim.create_optimizer(net, "nope")


# ----------------------------------------------------------------------------- CLI
def test_version(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"optirep {optirep.__version__} (commit ")


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: optirep {command}")


# ----------------------------------------------------------------------------- packaging
def test_schema_is_package_data_and_the_documented_path_is_the_same_file():
    packaged = Path(str(config.DEFAULT_SCHEMA))
    assert packaged.is_relative_to(Path(optirep.__file__).parent) and packaged.is_file()
    assert (ROOT / "experiments" / "schema.yaml").read_bytes() == packaged.read_bytes()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    rel = packaged.relative_to(Path(optirep.__file__).parent)
    patterns = pyproject["tool"]["setuptools"]["package-data"]["optirep"]
    assert any(rel.match(p) for p in patterns), (rel, patterns)


def test_runtime_dependencies_are_ranges_not_pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_dep = next(d for d in deps if d.startswith("torch"))
    assert "==" not in torch_dep and ">=" in torch_dep, torch_dep
    assert not [d for d in deps if "==" in d]
    lock = (ROOT / "envs" / "requirements.lock").read_text()
    assert "torch==" in lock  # exact pins stay in the lock file


# ----------------------------------------------------------------------------- provenance
def test_metrics_record_every_hyperparameter_including_class_defaults(tmp_path):
    for label in ("adamw", "sgd"):
        run = run_cfg(tmp_path, label=label, overrides=["task.steps=2"])
        rec = trainmod.train(run, tmp_path / label, quiet=True)
        cls = optim.spec(run["optimizer"]["name"]).cls
        names = {n for n, p in inspect.signature(cls.__init__).parameters.items()
                 if n not in ("self", "params") and p.default is not inspect.Parameter.empty}
        assert names <= set(rec["hp"]), names - set(rec["hp"])
        assert rec["hp"]["lr"] == EXPERIMENT["optimizers"][label]["hp"]["lr"]
    assert rec["hp"]["dampening"] == 0 and rec["hp"]["nesterov"] is False


def test_config_hash_covers_class_defaults(tmp_path, monkeypatch):
    exp = config.load_experiment(write_experiment(tmp_path))
    before = config.resolve_run(exp, "mnist1d_mlp", "adamw", 0)

    class AdamWOtherEps(torch.optim.AdamW):  # the same optimizer with one class default changed
        def __init__(self, params, lr=1e-3, eps=1e-6, weight_decay=1e-2):
            super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay)

    entry = optim.spec("adamw")
    monkeypatch.setitem(optim.REGISTRY, "adamw", type(entry)(**{**entry.__dict__, "cls": AdamWOtherEps,
                                                                   "to_baseline": None}))
    after = config.resolve_run(exp, "mnist1d_mlp", "adamw", 0)
    assert before["optimizer"]["resolved_hp"]["eps"] == 1e-8 and after["optimizer"]["resolved_hp"]["eps"] == 1e-6
    assert before["config_hash"] != after["config_hash"]


def _dist_info(site: Path, direct_url: dict | None) -> None:
    info = site / f"optirep-{optirep.__version__}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: optirep\nVersion: {optirep.__version__}\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    (site / "optirep").mkdir()
    (site / "optirep" / "__init__.py").write_text("")


def test_commit_of_an_installed_copy_comes_from_its_install_record(tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    git_site, dir_site = tmp_path / "git" / "site-packages", tmp_path / "dir" / "site-packages"
    _dist_info(git_site, {"url": "https://github.com/o/optirep.git",
                          "vcs_info": {"vcs": "git", "commit_id": sha, "requested_revision": "main"}})
    _dist_info(dir_site, {"url": "file:///src/optirep", "dir_info": {}})
    assert provenance.install_commit(path=[str(git_site)]) == sha
    assert provenance.install_commit(path=[str(dir_site)]) is None
    # an installed package is never attributed to a repository around it (a venv inside a checkout)
    assert provenance.source_checkout(git_site / "optirep") is None
    assert provenance.source_checkout(ROOT / "src" / "optirep") == ROOT
    assert provenance.git_sha(git_site / "optirep", path=[str(git_site)]) == sha
    assert provenance.git_sha(dir_site / "optirep", path=[str(dir_site)]) == "unknown"


def test_checkout_is_dirty_for_changed_code_not_for_pipeline_outputs(tmp_path):
    """Snakemake deletes a tracked output (a timing record, an aggregate) before its job runs: the job's
    commit must not read '-dirty' for that, but must for a changed source file."""
    repo = tmp_path / "repo"
    for rel in ("pyproject.toml", "src/optirep/__init__.py", "results/x/aggregate/t.json", "README.md"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("0\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=repo, check=True)
    sha = provenance.checkout_commit(repo)
    assert sha is not None and not sha.endswith("-dirty")
    (repo / "results/x/aggregate/t.json").unlink()
    (repo / "README.md").write_text("1\n")
    assert provenance.checkout_commit(repo) == sha
    (repo / "src/optirep/__init__.py").write_text("1\n")
    assert provenance.checkout_commit(repo) == sha + "-dirty"


def test_resume_loads_the_checkpoint_weights_only(tmp_path, monkeypatch):
    calls = []
    real = torch.load

    def load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainmod.torch, "load", load)
    run = run_cfg(tmp_path, overrides=["task.steps=8", "task.checkpoint_every=2"])
    assert trainmod.train(run, tmp_path / "r", quiet=True, stop_after=3) is None
    trainmod.train(run, tmp_path / "r", quiet=True)
    assert calls == [True]


@pytest.mark.parametrize("name", BIO)
def test_every_bio_optimizer_resumes_from_a_weights_only_checkpoint(tmp_path, name):
    cfg = json.loads(json.dumps(EXPERIMENT))
    cfg["optimizers"]["bio"] = {"name": name, "hp": {"lr": 1e-3}}
    cfg["tasks"]["mnist1d_mlp"]["optimizers"].append("bio")
    run = run_cfg(tmp_path, label="bio", cfg=cfg, overrides=["task.steps=6", "task.eval_every=3"])
    full = trainmod.train(run, tmp_path / "full", quiet=True)
    assert trainmod.train(run, tmp_path / "part", quiet=True, stop_after=4) is None
    resumed = trainmod.train(run, tmp_path / "part", quiet=True)
    assert resumed["final_test"] == full["final_test"] and resumed["final_train_loss"] == full["final_train_loss"]


def test_checkpoint_every_is_honoured_below_eval_every(tmp_path, monkeypatch):
    saved = []
    real = trainmod.runio.save_checkpoint

    def save(obj, path):
        if Path(path).name == "ckpt.pt":
            saved.append(obj["state"]["step"])
        return real(obj, path)

    monkeypatch.setattr(trainmod.runio, "save_checkpoint", save)
    run = run_cfg(tmp_path, overrides=["task.steps=24", "task.eval_every=8", "task.checkpoint_every=4"])
    trainmod.train(run, tmp_path / "r", quiet=True)
    assert saved == [4, 8, 12, 16, 20, 24]


# ----------------------------------------------------------------------------- a real install
@pytest.mark.slow
def test_non_editable_install_into_a_fresh_venv_validates_a_copied_experiment(tmp_path):
    """`pip install <checkout>` (a built wheel, not editable) into a new virtualenv outside the repository,
    with torch and the other dependencies taken from this environment (no network), then
    `optirep validate` and `optirep --version` on an experiment YAML copied away from the repository."""
    src = tmp_path / "src-copy"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        if (ROOT / rel).is_file() and rel.split("/")[0] in ("src", "pyproject.toml", "README.md"):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    here = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
    (site / "deps-from-host.pth").write_text(here + "\n")  # torch etc., without the host's optirep .pth hooks
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    res = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--target", str(site), "--upgrade", str(src)], capture_output=True, text=True,
                         timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (site / "optirep" / "schema" / "experiment.yaml").is_file()
    exp = tmp_path / "elsewhere" / "my.yaml"
    exp.parent.mkdir()
    shutil.copy(ROOT / "experiments" / "smoke.yaml", exp)
    code = ("import sys, optirep, optirep.cli; print(optirep.__file__); "
            f"sys.exit(optirep.cli.main(['validate', {str(exp)!r}]))")
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert lines[0].startswith(str(site)), lines[0]  # the installed copy, not the checkout
    cfg = config.load_experiment(exp)
    assert len(lines) - 1 == len(config.grid(cfg)) and lines[1].split("\t")[0] in cfg["tasks"]


# ----------------------------------------------------------------------------- README usage
def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using the optimizers in your own code", 1)[1].split("\n## ", 1)[0]
    return [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]


def test_readme_usage_blocks_compile_and_the_plain_loop_runs(capsys):
    blocks = _readme_blocks()
    assert len(blocks) == 3  # plain loop, Lightning, HF Trainer
    for b in blocks:
        compile(b, "README.md", "exec")
    assert "steps_per_epoch=" in blocks[1] and "optimizers=(opt, sched)" in blocks[2]
    ns: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)  # noqa: S102 - the README's own example
    assert capsys.readouterr().out.startswith("{'")  # diagnostics() printed a non-empty dict
    assert all(torch.isfinite(p).all() for p in ns["model"].parameters())
