"""`ate lerobot align`: train both action VAEs straight from LeRobotDataset roots (main env, pyarrow only).

The VAEs see exactly the action space the LeRobot policy trains in: each dataset's ``meta/stats.json``
with the policy's ACTION normalisation (diffusion MIN_MAX, pi0 / SmolVLA MEAN_STD, pi0.5 QUANTILES) and the
policy's chunk length (diffusion ``horizon``, pi0 family ``chunk_size``). The stage-2 model directory is
what ``--policy.vae_path`` of the ``ate_*`` LeRobot policy types expects.
"""

from __future__ import annotations

import argparse

NORM_MODES = ("MIN_MAX", "MEAN_STD", "QUANTILES", "QUANTILE10")


def _align_command(argv: list[str]):
    from ate.align.train import AlignConfig
    from ate.cli._fields import INT_GE1
    from ate.cli._tyro import Group, TyroCommand, config_options, option

    own = [option("source", str, "source (pretraining) LeRobotDataset root (v3.0 or v2.1)"),
           option("target", str, "target (fine-tuning) LeRobotDataset root"),
           option("policy", str, "LeRobot policy family whose normalisation and chunk length the VAEs must use",
                  choices=("diffusion", "pi0", "pi05", "smolvla")),
           option("out", str, "run directory: OUT/stage1, OUT/stage2 (re-run to resume)"),
           option("horizon", int | None, "chunk length = the policy's --policy.horizon (diffusion) / "
                                         "--policy.chunk_size (pi0 family); default: LeRobot's default for --policy",
                  None, type=INT_GE1),
           option("norm_mode", str | None, "ACTION normalisation if you changed the policy's normalization_mapping "
                                           "(default: the policy's)", None, choices=NORM_MODES),
           option("key", str, "per-frame action field", "action")]
    return TyroCommand("ate lerobot align", "Train both action VAEs straight from LeRobotDataset roots, in the action "
                                            "space the LeRobot policy trains in (its meta/stats.json normalisation "
                                            "and chunk length).",
                       [Group("options", own),
                        Group("training", config_options(AlignConfig, skip={"horizon", "normalization"}))],
                       func=_align)


def register(sub) -> None:
    from ate.cli._tyro import register_tyro

    p = sub.add_parser("lerobot", help="LeRobot integration: train the VAEs from LeRobotDataset roots",
                       description="LeRobot integration. The policy types ate_diffusion / ate_pi0 / ate_pi05 / "
                                   "ate_smolvla run inside LeRobot's own environment (scripts/lerobot_env.sh), which "
                                   "installs the lerobot_policy_ate plugin that lerobot-train registers by itself.")
    cmds = p.add_subparsers(dest="lerobot_command", metavar="COMMAND", required=True)
    register_tyro(cmds, "align", "stage-1 VAE on the source root, stage-2 VAE on the target root", _align_command)


def _align(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from ate.align.train import AlignConfig, train_stage1, train_stage2
    from ate.cli._options import dataclass_from_args
    from ate.data import load_episodes
    from ate.data.action_space import compare
    from ate.integrations.lerobot_common import chunk_defaults, lerobot_action_space, read_stats

    defaults = chunk_defaults(args.policy)
    horizon = args.horizon or defaults["horizon"]
    mode = args.norm_mode or defaults["norm_mode"]
    out = Path(args.out)
    models = []
    for stage, root in ((1, args.source), (2, args.target)):
        eps = load_episodes(root, format="lerobot", key=args.key)
        # the action space the LeRobot policy trains in: the VAE's record must be this one (the plugin compares)
        space = lerobot_action_space(read_stats(root), mode, horizon, key=args.key, source=f"{root}/meta/stats.json")
        compare(space, dataclasses.replace(space, action_dim=eps.dim), what=f"{root} field {args.key!r}",
                expected_name="meta/stats.json", found_name="the data")
        cfg = dataclass_from_args(AlignConfig, args, horizon=space.horizon,
                                  normalization="meanstd" if mode == "MEAN_STD" else "minmax")
        if stage == 1:
            models.append(train_stage1(eps, out / "stage1", cfg, normalizer=space.normalizer))
        else:
            models.append(train_stage2(eps, out / "stage2", models[0], cfg, normalizer=space.normalizer))
    field = "horizon" if args.policy == "diffusion" else "chunk_size"
    print(f"stage 1: {models[0]}\nstage 2: {models[1]}\n"
          f"lerobot-train ... --policy.type=ate_{args.policy} "
          f"--policy.vae_path={models[1].resolve()} --policy.{field}={horizon}")
    return 0
