# optirep: the study as a workflow. A table of contents; the rules live in rules/*.smk and every
# rule calls an `optirep ...` subcommand or `python analysis/<artifact>.py`.
#
#   snakemake --cores all                                        # the full study (GPU: --profile profiles/local)
#   snakemake --cores 2 --configfile experiments/workflow-smoke.yaml   # the smoke DAG (make smoke)
#   snakemake -n --configfile experiments/workflow-cpu.yaml      # dry run: the task x optimizer x seed grid
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "experiments/workflow.yaml"


validate(config, "experiments/workflow.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/tune.smk"
include: "rules/train.smk"
include: "rules/batch.smk"
include: "rules/analysis.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
