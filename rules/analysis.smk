# Analysis: per run (spectral + feature metrics), Grad-CAM per vision task, aggregate per task.


rule analyze:
    input:
        lambda w: f"results/{w.exp}/runs/{w.task}/{w.label}/{spec(w.exp, w.task, w.label)}/seed{w.seed}/metrics.json",
    output:
        "results/{exp}/analysis/{task}/{label}/seed{seed}.json",
    log:
        "results/{exp}/logs/analyze/{task}/{label}/seed{seed}.log",
    params:
        run=lambda w, input: os.path.dirname(input[0]),
    # ~10 s each, one per run: on a cluster the profile packs many into one Slurm job (group-components)
    group:
        "analyze"
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep analyze {params.run} --out {output} > {log} 2>&1"


rule gradcam:
    input:
        runs=lambda w: final_metrics(w.exp, w.task),
    output:
        json="results/{exp}/gradcam/{task}.json",
        fig="results/{exp}/gradcam/{task}.pdf",
    log:
        "results/{exp}/logs/gradcam/{task}.log",
    params:
        exp=exp_file,
        data=DATA_ARGS,
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "python analysis/gradcam.py --experiment {params.exp:q} --results results/{wildcards.exp}"
        " --task {wildcards.task} --out-json {output.json} --out-fig {output.fig} {params.data} > {log} 2>&1"


rule aggregate:
    input:
        exp=exp_file,
        runs=lambda w: final_metrics(w.exp, w.task),
        analyses=lambda w: analyses(w.exp, w.task),
        gradcam=lambda w: [f"results/{w.exp}/gradcam/{w.task}.json"] if w.task in gradcam_tasks(w.exp) else [],
    output:
        "results/{exp}/aggregate/{task}.json",
    log:
        "results/{exp}/logs/aggregate/{task}.log",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep aggregate --experiment {input.exp:q} --results results/{wildcards.exp} --task {wildcards.task}"
        " --out {output} > {log} 2>&1"
