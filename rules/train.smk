# Training: final runs (task x optimizer x seed); tuning lives in rules/tune.smk.
# Every job is one `optirep train` call; its run dir resumes from its checkpoint if interrupted.
# Paths carry {spec}, the hash of the config a run depends on (common.smk `spec`), and the experiment
# file is a param, not an input: editing one task's block gives that task's runs a new place and
# leaves every finished run (and every other task) untouched (docs/DESIGN.md "Results tree").
# A tuned label's runs depend on its selected.json at the same {spec} (rules/tune.smk).


rule derive_hp:
    input:
        runs=lambda w: source_runs(w),
    output:
        "results/{exp}/derived/{task}/{label}/{spec}/hp.json",
    log:
        "results/{exp}/logs/derive/{task}/{label}/{spec}.log",
    params:
        exp=exp_file,
        dirs=lambda w, input: " ".join(os.path.dirname(f) for f in input.runs),
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep derive-hp --experiment {params.exp:q} --optimizer {wildcards.label} --runs {params.dirs}"
        " --out {output} > {log} 2>&1"


rule train:
    input:
        hp=hp_input,
        data=fetched,
    output:
        "results/{exp}/runs/{task}/{label}/{spec}/seed{seed}/metrics.json",
    log:
        "results/{exp}/logs/runs/{task}/{label}/{spec}/seed{seed}.log",
    params:
        exp=exp_file,
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
        "exec optirep train --experiment {params.exp:q} --task {wildcards.task} --optimizer {wildcards.label}"
        " --seed {wildcards.seed} --out {params.out} {params.hp} {params.data} --quiet > {log} 2>&1"


# The timing stage (the workflow config's `timing:`): a task's optimizers interleaved one step at a time in
# one process (optirep timing);
# timing claims are judged from its record, not from the training runs. It reserves every core, so
# no other job of this workflow shares the CPU while it measures.
rule timing:
    input:
        exp=exp_file,
        data=fetched,
    output:
        "results/{exp}/timing/{task}.json",
    log:
        "results/{exp}/logs/timing/{task}.log",
    params:
        data=DATA_ARGS,
        timing=timing_args,
    conda:
        "../envs/optirep.yaml"
    threads: workflow.cores
    resources:
        gpu=lambda w: int(EXPS[w.exp].get("device", "auto") != "cpu"),
    shell:
        "optirep timing --experiment {input.exp} --task {wildcards.task} {params.timing} --out {output} {params.data}"
        " --quiet > {log} 2>&1"
