"""Errors raised by ate. Every message names the file / episode / field at fault."""


class ATEError(Exception):
    """Base class for every error ate raises on purpose."""


class DataError(ATEError, ValueError):
    """Unreadable, empty, truncated or invalid (NaN/Inf) input data."""


class ShapeMismatchError(ATEError, ValueError):
    """Dimensions that must agree do not (VAE vs data, VAE vs policy chunk, mask vs dims)."""


class CheckpointError(ATEError, ValueError):
    """A checkpoint is missing, incomplete or does not fit what it is loaded into."""


class EvaluationError(ATEError, RuntimeError):
    """An episode failed inside an evaluation worker (simulator or policy error), or a worker died."""
