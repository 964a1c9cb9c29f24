# Datasets: `optirep fetch` (download, or copy from an offline mirror, md5-checked).


rule fetch:
    output:
        touch("results/data/{dataset}.fetched"),
    log:
        "results/logs/fetch/{dataset}.log",
    threads: 1
    resources:
        fetch=1,
    shell:
        "optirep fetch {wildcards.dataset} {DATA_ARGS} > {log} 2>&1"


def fetched(w=None):
    return [f"results/data/{d}.fetched" for d in config.get("fetch", [])]
