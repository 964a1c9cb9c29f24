# Training: final runs (task x optimizer x seed); tuning lives in rules/tune.smk.
# Every job is one `optirep train` call; its run dir resumes from its checkpoint if interrupted.


rule derive_hp:
    input:
        exp=exp_file,
        runs=lambda w: [f"{d}/metrics.json" for d in run_dirs(w.exp, w.task, opt_cfg(w)["lr_from"]["label"])],
    output:
        "results/{exp}/derived/{task}/{label}/hp.json",
    log:
        "results/{exp}/logs/derive/{task}/{label}.log",
    params:
        dirs=lambda w, input: " ".join(os.path.dirname(f) for f in input.runs),
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep derive-hp --experiment {input.exp} --optimizer {wildcards.label} --runs {params.dirs}"
        " --out {output} > {log} 2>&1"


rule train:
    input:
        exp=exp_file,
        hp=hp_input,
        data=fetched,
    output:
        "results/{exp}/runs/{task}/{label}/seed{seed}/metrics.json",
    log:
        "results/{exp}/logs/runs/{task}/{label}/seed{seed}.log",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
        hp=lambda w, input: f"--hp-json {input.hp}" if input.hp else "",
        data=DATA_ARGS,
    conda:
        "../envs/optirep.yaml"
    threads: 1
    resources:
        gpu=lambda w: int(EXPS[w.exp].get("device", "auto") != "cpu"),
    shell:
        # exec: SIGTERM from Slurm reaches `optirep train` (which checkpoints), not a shell that dies first
        "exec optirep train --experiment {input.exp} --task {wildcards.task} --optimizer {wildcards.label}"
        " --seed {wildcards.seed} --out {params.out} {params.hp} {params.data} --quiet > {log} 2>&1"
