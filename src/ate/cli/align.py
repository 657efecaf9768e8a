"""`ate align stage1|stage2|toy`: train the pretraining / adaptation action VAEs."""

from __future__ import annotations

CONFIG_HELP = ("JSON config of an earlier run: its run.json, or the run folder. Its values become the defaults, "
               "options given here override them. Without --out the run writes into the out dir the config names, "
               "which is only allowed when that run has a checkpoint to resume (it then continues, e.g. with a larger "
               "--steps); otherwise give --out <new dir>")


def _config_file(stage: int):
    """run.json (and a checkpoint's config.json, the same keys) -> the options of `ate align stage<stage>`."""
    import dataclasses

    from ate.align.train import AlignConfig
    from ate.cli._tyro import ConfigFile

    def check(d: dict) -> str | None:
        if "stage" in d and d["stage"] != stage:
            return f"written by ate align stage{d['stage']}, not stage{stage}"
        return None

    keys = {"data": "data", "data_format": "format", "data_key": "key", "out": "out", "normalizer_from": "normalizer_from",
            "source_checkpoint": "source" if stage == 2 else None,
            "align_config": {f.name: f.name for f in dataclasses.fields(AlignConfig)},
            # written by the run (what it found and built), not options
            **dict.fromkeys(("stage", "normalizer", "chunk", "vae_config", "train_chunks", "val_chunks", "num_episodes",
                             "world_size", "format", "ate_version", "prior_kind")),
            }
    return ConfigFile("run.json", keys, check)


def _command(stage: int):
    from ate.align.train import AlignConfig
    from ate.cli._tyro import Group, TyroCommand, config_options, option
    from ate.data import FORMATS

    own = [
        option("data", str, "dataset path (HDF5 dir/file, zarr, LeRobot root, npz, npy dir)"),
        option("format", str, "force a format instead of auto-detection", "auto", choices=("auto", *FORMATS)),
        option("key", str | None, "per-frame field to read (default: the format's action field)", None),
        option("out", str, "run directory (re-run the same command to resume)"),
        option("normalizer_from", str | None, "take normalisation stats from a VAE / policy dir (one robot) or a "
                                              "Normalizer JSON instead of fitting them (use the policy's, so the VAE "
                                              "sees exactly the policy's action space)", None),
    ]
    if stage == 2:
        own.append(option("source", str, "stage-1 run or model directory (its prior is the target)"))
    return TyroCommand(f"ate align stage{stage}", DESCRIPTIONS[stage],
                       [Group("options", own), Group("training", config_options(AlignConfig))],
                       func=_run, config_file=_config_file(stage), config_help=CONFIG_HELP)


DESCRIPTIONS = {1: "Stage 1: train a VAE on the source (pretraining) action chunks and summarise its latent distribution "
                   "(the prior stage 2 aligns to).",
                2: "Stage 2: train a fresh VAE on the target action chunks, aligned to a stage-1 prior (reverse KL + MMD)."}


def register(sub) -> None:
    from ate.cli._tyro import register_tyro

    p = sub.add_parser("align", help="train the stage-1 (source) and stage-2 (target) action VAEs",
                       description="Align: stage 1 trains a VAE on source action chunks and summarises its latent "
                                   "distribution; stage 2 trains a fresh VAE on target chunks aligned to it (reverse KL).")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage, help_ in ((1, "VAE on the source (pretraining) data + prior summary"),
                         (2, "VAE on the target data, aligned to a stage-1 prior")):
        register_tyro(stages, f"stage{stage}", help_, lambda argv, stage=stage: _command(stage))
    register_tyro(stages, "toy", "generate a small synthetic source/target pair and run both stages + inspect",
                  _toy_command)


def _toy_command(argv: list[str]):
    from ate.cli._fields import INT_GE1
    from ate.cli._tyro import option, simple_command

    return simple_command("ate align toy", "Generate a small synthetic source / target pair, run both stages on it and "
                                           "inspect the alignment (a minute on a CPU).", [
        option("out", str, "run directory", "runs/toy-align"),
        option("steps", int, "steps per stage", 400, type=INT_GE1),
        option("progress", bool, "progress bars on a terminal, else log lines", True),
    ], _toy)


def _run(args) -> int:
    from pathlib import Path

    from ate.align.train import AlignConfig, train_stage1, train_stage2
    from ate.cli._options import check_config_out, dataclass_from_args
    from ate.data import load_episodes
    from ate.data.action_space import load_normalizer
    from ate.training import is_main_rank

    out_dir = Path(args.out)
    check_config_out(args, "out", "--out", occupied=(out_dir / "run.json").is_file(),
                     resumable=(out_dir / "last" / "training_state" / "state.json").is_file())
    cfg = dataclass_from_args(AlignConfig, args)
    eps = load_episodes(args.data, format=args.format, key=args.key)
    norm = load_normalizer(args.normalizer_from) if args.normalizer_from else None
    # the options beyond AlignConfig, so that run.json is the whole command (ate align ... --config <run>)
    info = {"data": args.data, "data_format": args.format, "data_key": args.key,
            "normalizer_from": args.normalizer_from, "out": args.out}
    if args.prog_name.endswith("stage1"):
        out = train_stage1(eps, args.out, cfg, normalizer=norm, run_info=info)
    else:
        out = train_stage2(eps, args.out, args.source, cfg, normalizer=norm, run_info=info)
    if is_main_rank():  # every rank returns here
        print(f"model written to {out} (metrics: {args.out}/metrics.jsonl)")
    return 0


def _toy(args) -> int:
    from pathlib import Path

    from ate.align.inspect import inspect_alignment
    from ate.align.train import AlignConfig, train_stage1, train_stage2
    from ate.bench.synthetic import write_toy_npz
    from ate.training import is_main_rank

    out = Path(args.out)
    src = write_toy_npz(out / "data" / "source.npz", 80, 100, 8, seed=0, domain="source")
    tgt = write_toy_npz(out / "data" / "target.npz", 10, 100, 7, seed=1, domain="target")
    common = dict(steps=args.steps, horizon=16, eval_every=100, save_every=100, progress=args.progress)
    m1 = train_stage1(src, out / "stage1", AlignConfig(**common))
    m2 = train_stage2(tgt, out / "stage2", m1, AlignConfig(**common))
    if not is_main_rank():  # launched on several ranks: one inspection, one print
        return 0
    report = inspect_alignment(m2, tgt, out / "inspect", source=m1, source_data=src)
    print(f"stage 1: {m1}\nstage 2: {m2}\ninspection: {report['png']}")
    print(f"target latents: mean log p under the prior {report['target_logp']:.2f} "
          f"(source latents {report['source_logp']:.2f}); recon error per dim {report['recon_per_dim']}")
    return 0
