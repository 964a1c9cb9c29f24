"""optirep's datasets: fetching (with an offline mirror), loading, splits and augmentation.

    optirep fetch <dataset> [--root DIR] [--mirror DIR]

    from optirep.data import load, augment
    train, val, test, info = load("cifar10", root="data", seed=0, train_fraction=0.1)
    xb = augment(train.x[:128], info["augment"], generator, fill=info["augment_fill"])
"""

from importlib import import_module

# Resolved on first use (PEP 562) so that `python -m optirep.data.fetch` does not import
# optirep.data.fetch twice, and `import optirep.data` stays cheap. `fetch` is both the submodule
# (`optirep.data.fetch.main` for the CLI) and, being callable, the function: `optirep.data.fetch(name)`.
_EXPORTS = {
    "load": "loaders", "DATASETS": "loaders", "NORMALIZE": "loaders", "SEGMENTATION_DATASETS": "loaders",
    "fetch": "fetch", "FetchError": "fetch",
    "augment": "augment",
    "SOURCES": "sources", "override_checksums": "sources",
    "Splits": "splits", "TensorSplit": "splits",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'optirep.data' has no attribute {name!r}")
    module = import_module(f"optirep.data.{_EXPORTS[name]}")
    # `optirep.data.fetch` is the submodule (callable: it runs fetch.fetch), never shadowed
    value = module if name == "fetch" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
