"""Errors raised by ate. Every message names the file / episode / field at fault."""


class ATEError(Exception):
    """Base class for every error ate raises on purpose."""


class DataError(ATEError, ValueError):
    """Unreadable, empty, truncated or invalid (NaN/Inf) input data."""


class ShapeMismatchError(ATEError, ValueError):
    """Dimensions that must agree do not (VAE vs data, VAE vs policy chunk, mask vs dims)."""


class CheckpointError(ATEError, ValueError):
    """A checkpoint is missing, incomplete or does not fit what it is loaded into."""


class ActionSpaceMismatchError(ShapeMismatchError, CheckpointError):
    """Two action-space records that must agree do not (a VAE and the policy it guides, a directory and its own
    config files): `ate.data.action_space.compare`. A ShapeMismatchError and a CheckpointError both, so code that
    caught either of the checks it replaces still catches it."""


class ConfigError(ATEError, ValueError):
    """An option / config field has a value outside what it accepts (raised by the config dataclasses)."""


class MissingDependencyError(ATEError, ImportError):
    """An optional package that the chosen option needs is not installed (the message has the pip command)."""


class SimError(ATEError, RuntimeError):
    """A simulator env or scripted expert cannot be built, is not supported for a robot / task, or fails
    during an episode. The message names suite / task / robot (and the seed, for an episode)."""


class EvaluationError(ATEError, RuntimeError):
    """An episode failed inside an evaluation worker (simulator or policy error), or a worker died."""
