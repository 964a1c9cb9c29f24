# Datasets: `optirep fetch` (download, or copy from an offline mirror, md5-checked).


rule fetch:
    output:
        touch("results/data/{dataset}.fetched"),
    log:
        "results/logs/fetch/{dataset}.log",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    params:
        data=FETCH_ARGS,
    resources:
        fetch=1,
    shell:
        "optirep fetch {wildcards.dataset} {params.data} > {log} 2>&1"
