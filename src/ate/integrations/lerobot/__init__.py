"""LeRobot (>= 0.6) plugin: policy types ``ate_diffusion``, ``ate_pi0``, ``ate_pi05``, ``ate_smolvla``.

Import only inside LeRobot's environment (Python >= 3.12); the main ``ate`` package never imports it.
LeRobot registers it by itself through the ``lerobot_policy_ate`` distribution (``plugins/lerobot_policy_ate``,
installed by ``scripts/lerobot_env.sh``), which imports this package; so does the older
``--policy.discover_packages_path=ate.integrations.lerobot``. Importing it registers the config classes with
``PreTrainedConfig``; LeRobot then resolves ``modeling_ate.<Name>Policy`` and
``processor_ate.make_<type>_pre_post_processors`` by naming convention.
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
