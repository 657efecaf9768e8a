"""Pre / post processors of the ``ate_*`` policy types: exactly LeRobot's own for the base policy.

ATE changes only the training loss, so normalisation, tokenisation and padding must stay identical to the
base policy's (the VAE is trained in that normalised action space). LeRobot finds these functions by name
(``make_<type>_pre_post_processors`` in the ``processor_*`` sibling of the config module).
"""

from __future__ import annotations

from lerobot.policies.diffusion.processor_diffusion import make_diffusion_pre_post_processors
from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors
from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors
from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors


def make_ate_diffusion_pre_post_processors(config, dataset_stats=None):
    """LeRobot's diffusion processors (normalise per ``config.normalization_mapping``)."""
    return make_diffusion_pre_post_processors(config, dataset_stats)


def make_ate_pi0_pre_post_processors(config, dataset_stats=None):
    """LeRobot's pi0 processors (PaliGemma tokenizer, MEAN_STD by default)."""
    return make_pi0_pre_post_processors(config, dataset_stats)


def make_ate_pi05_pre_post_processors(config, dataset_stats=None):
    """LeRobot's pi0.5 processors (state tokenised into the prompt, QUANTILES by default)."""
    return make_pi05_pre_post_processors(config, dataset_stats)


def make_ate_smolvla_pre_post_processors(config, dataset_stats=None):
    """LeRobot's SmolVLA processors."""
    return make_smolvla_pre_post_processors(config, dataset_stats)
