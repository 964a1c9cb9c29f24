# Tuning (optirep.tuning): LR sweep on a log grid -> `bracket` rounds (a checkpoint) that extend the sweep
# at an edge until its best point is interior or a hard bound / the budget stops it -> quasi-random trials
# around the best lr -> selection on the mean validation metric over the tuning seeds.
# Every trial job trains one configuration at every tuning seed and writes trial.json last.


def tune_dir(w):
    return f"results/{w.exp}/tune/{w.task}/{w.label}"


def initial_points(w):
    o, t = opt_cfg(w), EXPS[w.exp]["tuning"]
    return list(range(len(optirep_tuning.lr_grid(o, t["lr_sweep"]["per_decade"]))))


def round_record(w, r):
    """Round r's record (Snakemake schedules the round first when it does not exist yet)."""
    f = checkpoints.bracket.get(exp=w.exp, task=w.task, label=w.label, r=r).output[0]
    return f, json.loads(Path(f).read_text())


def bracket_inputs(w):
    r = int(w.r)
    if r == 0:
        ks, prev = initial_points(w), []
    else:
        f, rec = round_record(w, r - 1)
        if rec["status"] != "extend":
            raise ValueError(f"{f}: the sweep stopped there ({rec['status']}); round {r} is not needed")
        ks, prev = [p["k"] for p in rec["points"]] + rec["next"], [f]
    match = (opt_cfg(w).get("gain") or {}).get("match")
    return {
        "exp": exp_file(w),
        "previous": prev,
        "points": [f"{tune_dir(w)}/lr/k{k}/trial.json" for k in sorted(ks)],
        "match": [f"results/{w.exp}/tune/{w.task}/{match}/sweep.json"] if match else [],
    }


def final_round(w):
    r = 0
    while True:
        f, rec = round_record(w, r)
        if rec["status"] != "extend":
            return f
        r += 1


rule tune_lr:
    input:
        exp=exp_file,
        data=fetched,
    output:
        f"results/{{exp}}/tune/{{task}}/{{label}}/lr/k{{k}}/trial.json",
    log:
        "results/{exp}/logs/tune/{task}/{label}/lr_k{k}.log",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
        data=DATA_ARGS,
    conda:
        "../envs/optirep.yaml"
    threads: 1
    resources:
        gpu=lambda w: int(EXPS[w.exp].get("device", "auto") != "cpu"),
    shell:
        "optirep tune-trial --experiment {input.exp} --task {wildcards.task} --optimizer {wildcards.label}"
        " --lr-point {wildcards.k} --out {params.out} {params.data} --quiet > {log} 2>&1"


checkpoint bracket:
    input:
        unpack(bracket_inputs),
    output:
        "results/{exp}/tune/{task}/{label}/bracket/round{r}.json",
    log:
        "results/{exp}/logs/tune/{task}/{label}/bracket_round{r}.log",
    params:
        dirs=lambda w, input: " ".join(os.path.dirname(f) for f in input.points),
        match=lambda w, input: f"--match {input.match[0]}" if input.match else "",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep bracket --experiment {input.exp} --task {wildcards.task} --optimizer {wildcards.label}"
        " --points {params.dirs} {params.match} --out {output} > {log} 2>&1"


rule sweep:
    input:
        final_round,
    output:
        "results/{exp}/tune/{task}/{label}/sweep.json",
    log:
        "results/{exp}/logs/tune/{task}/{label}/sweep.log",
    threads: 1
    shell:
        "cp {input} {output} 2> {log}"


rule tune_random:
    input:
        exp=exp_file,
        sweep="results/{exp}/tune/{task}/{label}/sweep.json",
        data=fetched,
    output:
        "results/{exp}/tune/{task}/{label}/random/trial{j}/trial.json",
    log:
        "results/{exp}/logs/tune/{task}/{label}/random_trial{j}.log",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
        data=DATA_ARGS,
    conda:
        "../envs/optirep.yaml"
    threads: 1
    resources:
        gpu=lambda w: int(EXPS[w.exp].get("device", "auto") != "cpu"),
    shell:
        "optirep tune-trial --experiment {input.exp} --task {wildcards.task} --optimizer {wildcards.label}"
        " --random {wildcards.j} --sweep {input.sweep} --out {params.out} {params.data} --quiet > {log} 2>&1"


rule select:
    input:
        exp=exp_file,
        sweep="results/{exp}/tune/{task}/{label}/sweep.json",
        trials=lambda w: [
            f"{tune_dir(w)}/random/trial{j}/trial.json" for j in range(EXPS[w.exp]["tuning"]["random_trials"])
        ],
    output:
        "results/{exp}/tune/{task}/{label}/selected.json",
    log:
        "results/{exp}/logs/select/{task}/{label}.log",
    params:
        dirs=lambda w, input: " ".join(os.path.dirname(f) for f in input.trials),
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep select --experiment {input.exp} --task {wildcards.task} --optimizer {wildcards.label}"
        " --sweep {input.sweep} --trials {params.dirs} --out {output} > {log} 2>&1"
