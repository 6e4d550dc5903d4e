"""`edgevit compress`: the most accurate student that meets a latency budget measured on the target."""

from edgevit.compress.search import compress

__all__ = ["compress"]
