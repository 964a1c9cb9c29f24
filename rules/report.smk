# Report: claims verdicts -> tables, figures, numbers -> paper PDF (+ README claims section).
# Every artifact is one `python analysis/<artifact>.py` call that only formats JSON results.

GEN = f"{PAPER_DIR}/generated"
# The code that turns results into verdicts, tables and figures: an input of every rule below that runs
# it, so an edit to it rebuilds what it formats (Snakemake's `code` trigger covers only a rule's own shell).
REPORT_CODE = sorted(str(p) for p in Path("src/optirep/report").glob("*.py")) + sorted(
    str(p) for p in Path("src/optirep/analysis").glob("stats.py"))


rule claims:
    input:
        claims="experiments/claims.yaml",
        aggregates=lambda w: [a for exp in EXPS for a in aggregates(exp)],
        timings=lambda w: [t for exp in EXPS for t in timings(exp)],
        code=REPORT_CODE,
    output:
        f"results/{STUDY}/claims.json",
    log:
        f"results/{STUDY}/logs/claims.log",
    params:
        only=" ".join(EXPS),
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep claims --claims {input.claims} --results results --experiments experiments"
        " --only {params.only} --out {output} > {log} 2>&1"


rule table_main:
    input:
        aggregates=lambda w: aggregates(w.exp),
        code=REPORT_CODE + ["analysis/table_main.py"],
    output:
        f"{GEN}/{{exp}}/table_main.tex",
    log:
        "results/{exp}/logs/table_main.log",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "python analysis/table_main.py --results results/{wildcards.exp} --out {output} > {log} 2>&1"


rule figure:
    input:
        aggregates=lambda w: aggregates(w.exp),
        code=lambda w: REPORT_CODE + [f"analysis/fig_{w.kind}.py"],
    output:
        directory(f"{GEN}/{{exp}}/fig_{{kind}}"),
    log:
        "results/{exp}/logs/fig_{kind}.log",
    wildcard_constraints:
        kind="curves|lr_sensitivity|erank",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        # the script creates {output} even when it has nothing to plot (as the DVC stage needs too)
        "python analysis/fig_{wildcards.kind}.py --results results/{wildcards.exp} --out {output} > {log} 2>&1"


rule gradcam_figure:
    input:
        "results/{exp}/gradcam/{task}.pdf",
    output:
        f"{GEN}/{{exp}}/fig_gradcam/fig_gradcam_{{task}}.pdf",
    log:
        "results/{exp}/logs/gradcam_figure/{task}.log",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "cp {input} {output} 2> {log}"


rule claims_tables:
    input:
        claims=f"results/{STUDY}/claims.json",
        code=REPORT_CODE + ["analysis/table_claims.py"],
    output:
        table=f"{GEN}/claims_table.tex",
        section=f"{GEN}/claims_section.tex",
        limitations=f"{GEN}/limitations.tex",
        conclusion=f"{GEN}/conclusion.tex",
    log:
        f"results/{STUDY}/logs/claims_tables.log",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "python analysis/table_claims.py --claims {input.claims} --out {output.table} --section-out {output.section}"
        " > {log} 2>&1"


rule fig_forest:
    input:
        claims=f"results/{STUDY}/claims.json",
        code=REPORT_CODE + ["analysis/fig_forest.py"],
    output:
        pdf=f"{GEN}/fig_forest.pdf",
        png=f"{GEN}/fig_forest.png",
    log:
        f"results/{STUDY}/logs/fig_forest.log",
    params:
        stem=lambda w, output: output.pdf[: -len(".pdf")],
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "python analysis/fig_forest.py --claims {input.claims} --out {params.stem} > {log} 2>&1"


rule protocol_and_numbers:
    input:
        claims=f"results/{STUDY}/claims.json",
        aggregates=lambda w: [a for exp in EXPS for a in aggregates(exp)],
        code=REPORT_CODE + ["analysis/table_protocol.py", "analysis/numbers_tex.py"],
    output:
        protocol=f"{GEN}/protocol.tex",
        numbers=f"{GEN}/numbers.tex",
    log:
        f"results/{STUDY}/logs/numbers.log",
    params:
        results=" ".join(f"results/{e}" for e in EXPS),
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "(python analysis/table_protocol.py --results {params.results} --out {output.protocol}"
        " && python analysis/numbers_tex.py --results {params.results} --claims {input.claims}"
        " --out {output.numbers}) > {log} 2>&1"


rule results_section:
    input:
        tables=[f"{GEN}/{e}/table_main.tex" for e in EXPS],
        figures=[f"{GEN}/{e}/fig_{k}" for e in EXPS for k in ("curves", "lr_sensitivity", "erank")],
        gradcam=[f"{GEN}/{e}/fig_gradcam/fig_gradcam_{t}.pdf" for e in EXPS for t in gradcam_tasks(e)],
    output:
        f"{GEN}/results.tex",
    log:
        f"results/{STUDY}/logs/results_section.log",
    params:
        results=" ".join(f"results/{e}" for e in EXPS),
        paper=lambda w, output: os.path.dirname(os.path.dirname(output[0])),
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "python analysis/results_section.py --results {params.results} --out {output} --paper-dir {params.paper}"
        " > {log} 2>&1"


rule paper:
    input:
        tex="paper/ms.tex",
        parts=[f"{GEN}/{n}" for n in ("numbers.tex", "protocol.tex", "results.tex", "claims_table.tex", "claims_section.tex",
                                        "limitations.tex", "conclusion.tex", "fig_forest.pdf")],
    output:
        f"{PAPER_DIR}/ms.pdf",
    log:
        f"results/{STUDY}/logs/paper.log",
    params:
        dir=lambda w, output: os.path.dirname(output[0]),
        cp_tex="" if PAPER_DIR == "paper" else f"cp paper/ms.tex {PAPER_DIR}/ms.tex &&",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "({params.cp_tex} cd {params.dir} && latexmk -pdf -interaction=nonstopmode -halt-on-error ms.tex) > {log} 2>&1"


rule readme:
    input:
        claims=f"results/{STUDY}/claims.json",
        code=REPORT_CODE,
    output:
        touch(f"results/{STUDY}/readme.stamp"),
    log:
        f"results/{STUDY}/logs/readme.log",
    conda:
        "../envs/optirep.yaml"
    threads: 1
    shell:
        "optirep readme --claims {input.claims} --readme README.md > {log} 2>&1"
