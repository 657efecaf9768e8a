"""LeRobot (>= 0.6) plugin: policy types ``ate_diffusion``, ``ate_pi0``, ``ate_pi05``, ``ate_smolvla``.

Import only inside LeRobot's environment (Python >= 3.12); the main ``ate`` package never imports it.
``lerobot-train --policy.discover_packages_path=ate.integrations.lerobot`` imports this package and all its
sub-modules, which registers the config classes with ``PreTrainedConfig``; LeRobot then resolves
``modeling_ate.<Name>Policy`` and ``processor_ate.make_<type>_pre_post_processors`` by naming convention.
"""

from ate.integrations.lerobot.configuration_ate import (
    AteDiffusionConfig,
    AteGuidanceFields,
    AtePI05Config,
    AtePI0Config,
    AteSmolVLAConfig,
)

POLICY_TYPES = ("ate_diffusion", "ate_pi0", "ate_pi05", "ate_smolvla")

__all__ = ["AteDiffusionConfig", "AteGuidanceFields", "AtePI0Config", "AtePI05Config", "AteSmolVLAConfig",
           "POLICY_TYPES"]
