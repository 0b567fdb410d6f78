"""Training data: read, normalise, hold out, mix, stream (`prepare`)."""

from .read import PreparedData, prepare

__all__ = ["PreparedData", "prepare"]
