# Tuning (optirep.tuning): LR sweep on a log grid -> `bracket` rounds (a checkpoint) that extend the sweep
# at an edge until its best point is interior or a hard bound / the budget stops it -> quasi-random trials
# around the best lr -> selection on the mean validation metric over the tuning seeds.
# Every trial job trains one configuration at every tuning seed and writes trial.json last.
# Paths carry {spec}, the hash of what the tuning of (task, label) depends on (common.smk `spec`: the task
# block, the label's block and search space, the tuning block and seeds, a gain.match label's spec), and
# the experiment file is a param, not an input: editing one task or label retunes only that one, into a
# new place, and leaves every finished tuning tree untouched (docs/DESIGN.md "Results tree").


rule tune_lr:
    input:
        data=fetched_for_current,
    output:
        f"results/{{exp}}/tune/{{task}}/{{label}}/{{spec}}/lr/k{{k}}/trial.json",
    log:
        "results/{exp}/logs/tune/{task}/{label}/{spec}/lr_k{k}.log",
    params:
        exp=exp_file,
        out=lambda w, output: os.path.dirname(output[0]),
        data=DATA_ARGS,
    conda:
        "../envs/optirep.yaml"
    threads: 1
    resources:
        gpu=lambda w: int(EXPS[w.exp].get("device", "auto") != "cpu"),
    shell:
        # exec: SIGTERM from Slurm reaches optirep (which checkpoints), not a shell that dies first
        "exec optirep tune-trial --experiment {params.exp:q} --task {wildcards.task} --optimizer {wildcards.label}"
        " --lr-point {wildcards.k} --out {params.out} {params.data} --quiet > {log} 2>&1"


checkpoint bracket:
    input:
        unpack(bracket_inputs),
    output:
        "results/{exp}/tune/{task}/{label}/{spec}/bracket/round{r}.json",
    log:
        "results/{exp}/logs/tune/{task}/{label}/{spec}/bracket_round{r}.log",
    params:
        exp=exp_file,
        dirs=lambda w, input: " ".join(os.path.dirname(f) for f in input.points),
        match=lambda w, input: f"--match {input.match[0]}" if input.match else "",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep bracket --experiment {params.exp:q} --task {wildcards.task} --optimizer {wildcards.label}"
        " --points {params.dirs} {params.match} --out {output} > {log} 2>&1"


rule sweep:
    input:
        final_round,
    output:
        "results/{exp}/tune/{task}/{label}/{spec}/sweep.json",
    log:
        "results/{exp}/logs/tune/{task}/{label}/{spec}/sweep.log",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "cp {input} {output} 2> {log}"


rule tune_random:
    input:
        sweep="results/{exp}/tune/{task}/{label}/{spec}/sweep.json",
        data=fetched_for_current,
    output:
        "results/{exp}/tune/{task}/{label}/{spec}/random/trial{j}/trial.json",
    log:
        "results/{exp}/logs/tune/{task}/{label}/{spec}/random_trial{j}.log",
    params:
        exp=exp_file,
        out=lambda w, output: os.path.dirname(output[0]),
        data=DATA_ARGS,
    conda:
        "../envs/optirep.yaml"
    threads: 1
    resources:
        gpu=lambda w: int(EXPS[w.exp].get("device", "auto") != "cpu"),
    shell:
        "exec optirep tune-trial --experiment {params.exp:q} --task {wildcards.task} --optimizer {wildcards.label}"
        " --random {wildcards.j} --sweep {input.sweep} --out {params.out} {params.data} --quiet > {log} 2>&1"


rule select:
    input:
        sweep="results/{exp}/tune/{task}/{label}/{spec}/sweep.json",
        trials=lambda w: [
            f"{tune_dir(w)}/random/trial{j}/trial.json" for j in range(EXPS[w.exp]["tuning"]["random_trials"])
        ],
    output:
        "results/{exp}/tune/{task}/{label}/{spec}/selected.json",
    log:
        "results/{exp}/logs/select/{task}/{label}/{spec}.log",
    params:
        exp=exp_file,
        dirs=lambda w, input: " ".join(os.path.dirname(f) for f in input.trials),
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep select --experiment {params.exp:q} --task {wildcards.task} --optimizer {wildcards.label}"
        " --sweep {input.sweep} --trials {params.dirs} --out {output} > {log} 2>&1"
