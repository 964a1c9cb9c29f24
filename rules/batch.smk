# Studies of short runs: every seed of one (task, label), its final runs and their analyses, in one
# `optirep train` process, so that torch and the data code are imported once per label instead of
# once per run. Opt in per experiment with the workflow config key `batch_runs: [<experiment name>]`.
# The command is the same `optirep train` with repeated --seed and --out (optirep.launch);
# each run seeds itself, so the results equal those of one job per run (tests/test_launch.py).
# These rules take precedence over train/analyze for the listed experiments only (tuning trials keep
# one job each: `optirep tune-trial`).
import re


def batch_args(flag, output):
    """`--seed 0 --out D0 --seed 1 --out D1 ...` from a batch rule's metrics.json outputs."""
    pattern = re.compile(rf"{flag}(\d+)/metrics\.json$")
    return " ".join(f"--{flag} {pattern.search(f).group(1)} --out {os.path.dirname(f)}" for f in output)


for _exp in config.get("batch_runs", []):
    if _exp not in EXPS:
        raise ValueError(f"batch_runs: unknown experiment {_exp!r} (allowed values: {', '.join(EXPS)})")

    rule:
        name:
            f"train_seeds_{_exp}"
        input:
            hp=hp_input,
            data=fetched_for_current,
        output:
            [f"results/{{exp}}/runs/{{task}}/{{label}}/{{spec}}/seed{s}/metrics.json" for s in EXPS[_exp]["seeds"]],
        log:
            "results/{exp}/logs/runs/{task}/{label}/{spec}/seeds.log",
        wildcard_constraints:
            exp=re.escape(_exp),
        params:
            exp=exp_file,
            runs=lambda w, output: batch_args("seed", output),
            hp=lambda w, input: f"--hp-json {input.hp}" if input.hp else "",
            data=DATA_ARGS,
        conda:
            "../envs/optirep.yaml"
        threads: 1
        resources:
            gpu=lambda w: int(EXPS[w.exp].get("device", "auto") != "cpu"),
        shell:
            "optirep train --experiment {params.exp:q} --task {wildcards.task} --optimizer {wildcards.label}"
            " {params.runs} {params.hp} {params.data} --quiet > {log} 2>&1"

    workflow.ruleorder(f"train_seeds_{_exp}", "train")

    rule:
        name:
            f"analyze_seeds_{_exp}"
        input:
            lambda w: [f"{d}/metrics.json" for d in run_dirs(w.exp, w.task, w.label)],
        output:
            [f"results/{{exp}}/analysis/{{task}}/{{label}}/seed{s}.json" for s in EXPS[_exp]["seeds"]],
        log:
            "results/{exp}/logs/analyze/{task}/{label}/seeds.log",
        wildcard_constraints:
            exp=re.escape(_exp),
        params:
            runs=lambda w, input, output: " ".join(
                f"{os.path.dirname(i)} --out {o}" for i, o in zip(input, output)
            ),
        conda:
            "../envs/optirep.yaml"
        threads: 1
        shell:
            "optirep analyze {params.runs} > {log} 2>&1"

    workflow.ruleorder(f"analyze_seeds_{_exp}", "analyze")
