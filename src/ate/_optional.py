"""Optional dependencies: import one, or fail with one line naming the package and the extra to install."""

from __future__ import annotations

import importlib

from ate.errors import MissingDependencyError


def require(module: str, extra: str, purpose: str):
    """Import `module`; if it is missing raise MissingDependencyError, e.g. "--log-to wandb needs 'wandb':
    pip install 'align-then-steer[log]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs '{module.split('.')[0]}': pip install 'align-then-steer[{extra}]'") from exc
