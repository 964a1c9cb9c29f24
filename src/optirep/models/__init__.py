"""Model registry: every model behind a claim, by lowercase name.

    from optirep import models
    models.available()                               # ['bert_classifier', 'fcn_resnet50', ...]
    net = models.build_model("resnet18", num_classes=10)
    net.features(x)                                  # [B, 512] penultimate features
    models.final_linear(net)                         # net.fc, the seed's spectrum matrix

Conventions every family follows:
    classifiers   forward(x) -> logits [B, C]; features(x) -> [B, D] (the input of the final
                  Linear); `final_linear(model)` -> that Linear.
    LMs           forward(idx [B, T] long) -> logits [B, T, V]; `loss(idx, targets)` = mean
                  token cross-entropy. The training loop may equally compute
                  `F.cross_entropy(logits.flatten(0, 1), targets.flatten())` itself: same number.
    autoencoder   forward(x) -> reconstruction in [0, 1], same shape as x; encode(x) -> [B, Z].
    segmentation  forward(x [B, 3, H, W]) -> per-pixel logits [B, classes, H, W].

Every model is randomly initialised; nothing is ever downloaded. Families import torchvision /
transformers only when one of their models is built, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from torch import nn

# The explicit list: name -> (module in this package, builder function). One row per model.
_REGISTRY: dict[str, tuple[str, str]] = {
    "resnet18": ("vision", "resnet18"),
    "grn_simplecnn": ("vision", "grn_simplecnn"),
    "np_small_cifar": ("vision", "np_small_cifar"),
    "fcn_resnet50": ("vision", "fcn_resnet50"),
    "np_mlp": ("mlp", "np_mlp"),
    "mnist1d_mlp": ("mlp", "mnist1d_mlp"),
    "shakespeare_gpt": ("lm", "shakespeare_gpt"),
    "gpt2_25m": ("lm", "gpt2_25m"),
    "bert_classifier": ("text", "bert_classifier"),
    "pw_autoencoder": ("autoencoder", "pw_autoencoder"),
}


def available() -> list[str]:
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def builder(name: str) -> Callable[..., nn.Module]:
    """The builder function registered as `name`; ValueError listing the known names if unknown."""
    try:
        module, func = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(available())}") from None
    return getattr(importlib.import_module(f".{module}", __name__), func)


def build_model(name: str, **model_args: Any) -> nn.Module:
    """A freshly, randomly initialised model `name` built with `model_args`.

    Unknown keyword arguments raise ValueError naming them and the ones the model accepts
    (so a typo in an experiment YAML's `model_args` fails loudly instead of being ignored).
    """
    build = builder(name)
    accepted = [p for p in inspect.signature(build).parameters]
    unknown = sorted(set(model_args) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} got unknown argument(s) {unknown}; accepted: {', '.join(accepted)}"
        )
    return build(**model_args)


def final_linear(model: nn.Module) -> nn.Linear:
    """The model's final nn.Linear (ResNet `fc`, MLP/CNN `head`, BERT `classifier`, LM `lm_head`).

    This is the matrix whose singular values the BiostatisV6 seed reports (`fc.weight`, 10x512
    for CIFAR-10). ValueError for a model without one (segmentation, autoencoder).
    """
    for attr in ("fc", "head", "classifier", "lm_head"):
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Linear):
            return layer
    raise ValueError(
        f"{type(model).__name__} has no final nn.Linear: looked for attributes fc, head, "
        "classifier, lm_head"
    )


__all__ = ["available", "build_model", "builder", "final_linear"]
