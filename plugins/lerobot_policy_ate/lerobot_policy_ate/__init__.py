"""LeRobot plugin entry: importing it registers the ``ate_*`` policy types and the ``ate_toy`` env.

LeRobot imports this package by its distribution name at the start of every command
(``register_third_party_plugins``). The code itself lives in ``ate.integrations.lerobot``: the config
classes stay in ``ate.integrations.lerobot.configuration_ate``, so LeRobot resolves ``modeling_ate`` /
``processor_ate`` next to them and checkpoints written with ``--policy.discover_packages_path`` still load.
"""

try:
    from ate.integrations.lerobot import *  # noqa: F401,F403  (registers the configs)
    from ate.integrations.lerobot import toy_env  # noqa: F401  (registers --env.type=ate_toy)
except ModuleNotFoundError as exc:
    if exc.name not in ("ate", "ate.integrations", "ate.integrations.lerobot"):
        raise
    # LeRobot logs this and carries on; the message says what to install
    raise ModuleNotFoundError("lerobot_policy_ate: the `ate` package is not importable; set PYTHONPATH=<repo>/src "
                              "or run `pip install --no-deps -e <repo>` in this environment") from exc
