"""edgevit: from a CNN teacher and a dataset to a small, verified model on an edge device."""

__version__ = "0.1.0"
