"""optirep: reproducible replication of biologically inspired optimizers.

    python -m optirep --help      # or: optirep --help
"""

__version__ = "0.1.0"
