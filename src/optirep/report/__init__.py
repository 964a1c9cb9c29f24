"""Report layer: aggregate runs, judge claims, emit LaTeX/figures/README from JSON.

    optirep aggregate ...   optirep claims ...   optirep readme ...

Modules: `aggregate` (per-task statistics JSON), `claims` (verdict per seed claim), `latex`
(booktabs tables, claims section, numbers.tex), `figures` (seaborn PDFs/PNGs), `readme` (the
README's generated claims table). Each CLI is `main(argv) -> int` in its module.
"""
