# optirep: the study as a workflow. A table of contents; the rules live in rules/*.smk and every
# rule calls an `optirep ...` subcommand or `python analysis/<artifact>.py`.
#
#   snakemake --cores all                                        # the full study (GPU: --profile profiles/local)
#   snakemake --cores 2 --configfile experiments/workflow-smoke.yaml   # the smoke DAG (make smoke)
#   snakemake -n --configfile experiments/workflow-cpu.yaml      # dry run: the task x optimizer x seed grid
import os
import shlex
import sys

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


# On a cluster these run on the submit host, not as Slurm jobs: downloads (compute nodes usually
# have no internet), TeX (rarely on compute nodes) and steps that only reformat JSON in seconds.
localrules:
    all,
    fetch,
    bracket,
    sweep,
    select,
    derive_hp,
    claims,
    table_main,
    figure,
    gradcam_figure,
    claims_tables,
    protocol_and_numbers,
    results_section,
    paper,
    readme,


# Every job finds `optirep` and `python` of the interpreter running Snakemake (the project venv)
# first on PATH, activated or not: a Slurm job inherits no activation. Not with --use-conda, whose
# environment must win.
if not workflow.deployment_settings.deployment_method:
    shell.prefix(f"set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:\"$PATH\"; ")


rule all:
    default_target: True
    input:
        all_targets(),
