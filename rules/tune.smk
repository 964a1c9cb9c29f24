# Tuning (optirep.tuning): LR sweep on a log grid -> `bracket` rounds (a checkpoint) that extend the sweep
# at an edge until its best point is interior or a hard bound / the budget stops it -> quasi-random trials
# around the best lr -> selection on the mean validation metric over the tuning seeds.
# Every trial job trains one configuration at every tuning seed and writes trial.json last.


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
        # exec: SIGTERM from Slurm reaches optirep (which checkpoints), not a shell that dies first
        "exec optirep tune-trial --experiment {input.exp} --task {wildcards.task} --optimizer {wildcards.label}"
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
    conda:
        "../envs/optirep.yaml"
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
        "exec optirep tune-trial --experiment {input.exp} --task {wildcards.task} --optimizer {wildcards.label}"
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
