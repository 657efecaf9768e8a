"""Hooks into the stacks practitioners already train with.

- :mod:`ate.integrations.lerobot` — LeRobot policy types ``ate_diffusion`` / ``ate_pi0`` / ``ate_pi05`` /
  ``ate_smolvla`` (import only inside LeRobot's Python 3.12 environment, see scripts/lerobot_env.sh).
- :mod:`ate.integrations.lerobot_common` — normalisation / chunk facts shared with LeRobot (no LeRobot import).
- :mod:`ate.integrations.rdt` — drop-in guided loss for RDT-style runners (x0-prediction, unified 128 slots).

Nothing here is imported by ``import ate``.
"""
