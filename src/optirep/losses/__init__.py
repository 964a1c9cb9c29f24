"""Loss composition rules: `Planeswalker`, the seed's loss multiplexer (works with any optimizer)."""

from .planeswalker import Planeswalker

__all__ = ["Planeswalker"]
