"""Pure analysis functions: spectral metrics, statistics, Grad-CAM/ROAD, and the per-run entry.

    optirep analyze RUN_DIR --out FILE.json      # per-run analysis (optirep.analysis.run)

Submodules are imported by name (`from optirep.analysis import stats`) so that the report layer
does not pay for torch-heavy imports (grad-cam, matplotlib) it does not use.
"""

__all__ = ["spectral", "stats", "gradcam", "run"]
