"""`ate policy pretrain|finetune|predict|bench|normalizer`: the reference policies (DP-, RDT-, pi0-style)."""

from __future__ import annotations

import json


def _policy_config(text: str | None) -> dict:
    """--policy-config: a JSON object or a path to a JSON file."""
    if not text:
        return {}
    from pathlib import Path

    from ate.errors import ConfigError

    p = Path(text)
    try:
        value = json.loads(p.read_text() if p.is_file() else text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--policy-config: neither a JSON object nor a JSON file: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--policy-config: expected a JSON object, got {text!r}")
    return value


CONFIG_HELP = ("JSON config of an earlier run: its train_config.json, or the run folder. Its values become the "
               "defaults, options given here override them. Without --out the run writes into the out dir the "
               "config names, which is only allowed as a resume (--resume, the default, and a checkpoint there: "
               "it continues, e.g. with a larger --steps); otherwise give --out <new dir>")
GUIDANCE_DEFAULTS = (("scale", 2.0), ("clamp", 0.1), ("sign", "reference"), ("encoder_mode", "sample"),
                     ("reduction", "reference"), ("t_cap", None), ("noise_min", 0.0), ("noise_max", 1.0),
                     ("strength", "absolute"), ("latent_target", "clean"))


def _config_file(mode: str):
    """train_config.json (`ate.policies.train`) -> the options of `ate policy <mode>`."""
    import dataclasses

    from ate.cli._tyro import ConfigFile
    from ate.policies.train import TrainConfig

    def check(d: dict) -> str | None:
        if "mode" in d and d["mode"] != mode:
            return f"written by ate policy {d['mode']}, not {mode}"
        return None

    keys = {"data": "data", "out": "out", "state_key": "state_key", "action_key": "action_key",
            "train": {f.name: f.name for f in dataclasses.fields(TrainConfig)},
            # written by the run (what it resolved and built), not options
            **dict.fromkeys(("mode", "resolved_steps", "num_windows", "world_size"))}
    if mode == "pretrain":
        keys.update(policy={"type": "policy", "*": None}, policy_config="policy_config")
    else:
        keys.update(init="init", guidance="guidance", vae="vae", normalizer="normalizer", adapter="adapter",
                    anchor_weight="anchor_weight", normalizer_stats=None,  # the statistics --normalizer named
                    guidance_config={name: name for name, _ in GUIDANCE_DEFAULTS},
                    lora={"rank": "lora_rank", "alpha": "lora_alpha",
                          **dict.fromkeys(("layers", "trainable_params", "total_params"))},
                    policy=None)
    return ConfigFile("train_config.json", keys, check, json_text=frozenset({"policy_config"}))


def _data_options() -> list:
    from ate.cli._tyro import option

    return [option("state_key", str, "per-frame observation field", "observations/state"),
            option("action_key", str, "per-frame action field", "action"),
            option("resume", bool, "continue from OUT/checkpoints/last when present", True)]


def _training_group():
    from ate.cli._tyro import Group, config_options
    from ate.policies.train import TrainConfig

    return Group("training", config_options(TrainConfig))


def _pretrain_command(argv: list[str]):
    from ate.cli._tyro import Group, TyroCommand, option

    own = [option("data", list[str], "dataset path(s); robots from the episodes' 'robot' attr"),
           option("out", str, "run directory (re-run to resume)"),
           option("policy", str, "family: dp = DDPM eps-prediction 1-D UNet, rdt = x0-prediction DiT, pi0 = flow "
                                 "matching", "dp", choices=("dp", "rdt", "pi0", "dp_unet", "rdt_dit", "pi0_flow")),
           option("policy_config", str | None, 'JSON overrides, e.g. \'{"horizon": 16, "state_dim": 64}\', or a JSON '
                                               'file', None, metavar="JSON"),
           *_data_options()]
    return TyroCommand("ate policy pretrain", "Train a fresh policy on source datasets.",
                       [Group("options", own), _training_group()], func=_pretrain,
                       config_file=_config_file("pretrain"), config_help=CONFIG_HELP)


def _finetune_command(argv: list[str]):
    from ate.cli._fields import ANCHOR_HELP, FINITE_NONNEG, GUIDANCE, GUIDANCE_NOTE, INT_GE1
    from ate.cli._options import number
    from ate.cli._tyro import Group, Option, TyroCommand, option

    own = [option("data", list[str], "target dataset path(s), one robot"),
           option("out", str, "run directory (re-run to resume)"),
           option("init", str, "pretrained policy (model dir or pretrain run dir)"),
           option("guidance", str, "off = plain fine-tuning (SFT); ate = add the latent guidance term (needs --vae)",
                  "off", choices=("off", "ate")),
           option("vae", str | None, "adaptation VAE directory (ate align stage2), for --guidance ate", None),
           option("adapter", str, "full: every weight trains; lora: peft LoRA adapters on every Linear / Conv1d "
                                  "(merged into the saved model), the parameter-efficient baseline", "full",
                  choices=("full", "lora")),
           option("lora_rank", int, "LoRA rank r", 8, type=INT_GE1),
           option("lora_alpha", float | None, "LoRA scale numerator (scale alpha / r; default 2r)", None,
                  type=number(float, lo=0, lo_open=True, none=True)),
           option("anchor_weight", float, ANCHOR_HELP, 0.0, type=FINITE_NONNEG),
           option("normalizer", str | None, "target action stats from a VAE dir / policy dir / Normalizer JSON (give "
                                            "both arms the same)", None),
           *_data_options()]
    guidance = [Option(name, type(default) if default is not None else float | None, GUIDANCE[name], default)
                for name, default in GUIDANCE_DEFAULTS]
    return TyroCommand("ate policy finetune", "Fine-tune a pretrained policy on target data: plain (SFT) or with ATE's "
                                              "latent guidance. " + GUIDANCE_NOTE,
                       [Group("options", own), Group("ate_guidance", guidance), _training_group()], func=_finetune,
                       config_file=_config_file("finetune"), config_help=CONFIG_HELP)


def register(sub) -> None:
    from ate.cli._tyro import register_tyro

    p = sub.add_parser("policy", help="pretrain / fine-tune (plain or ATE) / run the reference policies",
                       description="Reference policies: dp (DDPM eps-prediction, 1-D conv UNet), rdt (x0-prediction "
                                   "DiT, unified 128 slots), pi0 (openpi flow matching, transformer action expert).")
    cmds = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    register_tyro(cmds, "pretrain", "train a fresh policy on source datasets", _pretrain_command)
    register_tyro(cmds, "finetune", "fine-tune a pretrained policy on target data, --guidance off|ate", _finetune_command)
    register_tyro(cmds, "predict", "sample action chunks for the first state of each episode of a dataset",
                  _predict_command)
    register_tyro(cmds, "bench", "train-step time with / without ATE, inference time, parameter counts", _bench_command)
    register_tyro(cmds, "normalizer", "write one robot's action stats of a policy as a Normalizer JSON (for `ate align "
                                      "--normalizer-from`)", _normalizer_command)


def _predict_command(argv: list[str]):
    from ate.cli._tyro import option, simple_command

    return simple_command("ate policy predict", "Sample action chunks for the first state of each episode of a "
                                                "dataset; print their shape and the mean prediction time.", [
        option("policy", str, "model dir or run dir"),
        option("data", str, "dataset whose episode start states are used"),
        option("robot", str | None, "robot whose action head to use (default: the episode's robot)", None),
        option("task", str | None, "task name (default: the episode's task attr)", None),
        option("seed", int, "seed of the sampling noise", 0),
        option("out", str | None, "write chunks to this .npz (default: print a summary)", None),
    ], _predict)


def _bench_command(argv: list[str]):
    from ate.cli._fields import INT_GE1
    from ate.cli._tyro import option, simple_command

    return simple_command("ate policy bench", "Train-step time with and without ATE's guidance, inference time and "
                                              "parameter counts of the reference policies.", [
        option("out", str, "output directory", "benchmarks/results/policies"),
        option("families", list[str], "policy families to time", ["dp", "rdt", "pi0"], choices=("dp", "rdt", "pi0")),
        option("steps", int, "timed steps per arm and repeat", 30, type=INT_GE1),
        option("repeats", int, "interleaved off/ate blocks, reduce load noise", 3, type=INT_GE1),
        option("batch_size", int, "training batch", 64, type=INT_GE1),
        option("horizon", int, "chunk length", 16, type=INT_GE1),
        option("vae_preset", str, "adaptation VAE size", "small", choices=("small", "reference")),
        option("threads", int | None, "torch threads (default: torch's choice)", None, type=INT_GE1),
        option("sizes", list[str], "policy sizes; 'large' (~10x compute) shows the ratio shrinking with policy size",
               ["default"], choices=("default", "large")),
        option("large_steps", int, "timed steps per arm and repeat for 'large'", 6, type=INT_GE1),
    ], _bench)


def _normalizer_command(argv: list[str]):
    from ate.cli._tyro import option, simple_command

    return simple_command("ate policy normalizer", "Write one robot's action statistics of a policy as a Normalizer "
                                                   "JSON, for `ate align ... --normalizer-from`.", [
        option("policy", str, "model dir or run dir"),
        option("robot", str | None, "robot to export (default: the policy's default robot)", None),
        option("out", str, "Normalizer JSON file to write"),
    ], _normalizer)


def _check_out(args) -> None:
    from pathlib import Path

    from ate.cli._options import check_config_out

    out = Path(args.out)
    check_config_out(args, "out", "--out", occupied=(out / "train_config.json").is_file(),
                     resumable=args.resume and (out / "checkpoints" / "last").exists(),
                     hint=" (or --resume to continue that run)" if not args.resume else "")


def _train_kw(args) -> dict:
    import dataclasses

    from ate.policies.train import TrainConfig

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}


def _written(out) -> None:
    from ate.training import is_main_rank

    if is_main_rank():  # under torchrun every rank returns from training
        print(f"policy written to {out}/pretrained_model")


def _pretrain(args) -> int:
    from ate.policies.train import pretrain

    _check_out(args)
    pretrain(args.data, args.out, policy=args.policy, policy_config=_policy_config(args.policy_config),
             resume=args.resume, state_key=args.state_key, action_key=args.action_key, **_train_kw(args))
    _written(args.out)
    return 0


def _finetune(args) -> int:
    from ate.errors import ConfigError
    from ate.policies.train import finetune

    if args.guidance == "ate" and not args.vae:
        raise ConfigError("--guidance ate needs --vae <adaptation VAE dir> (ate align stage2 --out ...)")
    _check_out(args)

    finetune(args.data, args.out, init=args.init, guidance=args.guidance, vae=args.vae, scale=args.scale,
             clamp=args.clamp, sign=args.sign, encoder_mode=args.encoder_mode, reduction=args.reduction,
             t_cap=args.t_cap, noise_min=args.noise_min, noise_max=args.noise_max, strength=args.strength,
             latent_target=args.latent_target, normalizer=args.normalizer, adapter=args.adapter, lora_rank=args.lora_rank,
             lora_alpha=args.lora_alpha, anchor_weight=args.anchor_weight, resume=args.resume, state_key=args.state_key,
             action_key=args.action_key, **_train_kw(args))
    _written(args.out)
    return 0


def _predict(args) -> int:
    import numpy as np
    import torch

    from ate.policies import load_policy
    from ate.policies.data import load_sources

    policy = load_policy(args.policy)
    gen = torch.Generator().manual_seed(args.seed)
    chunks, times = [], []
    for src in load_sources(args.data):
        robot = args.robot or src.robot
        starts = np.concatenate([[0], src.episode_ends[:-1]])
        for e, s0 in enumerate(starts):
            task = args.task or src.tasks[e]
            chunks.append(policy.predict_chunk({"state": src.states[s0], "task": task}, robot=robot, generator=gen)[0].numpy())
            times.append(policy.last_predict_s)
    chunks = np.stack(chunks)
    if args.out:
        np.savez(args.out, chunks=chunks)
    print(json.dumps({"chunks": list(chunks.shape), "mean_predict_ms": 1e3 * float(np.mean(times)),
                      "out": args.out}, indent=2))
    return 0


def _bench(args) -> int:
    from ate.policies.bench import run_bench

    res = run_bench(args.out, families=args.families, steps=args.steps, repeats=args.repeats,
                    batch_size=args.batch_size, horizon=args.horizon, vae_preset=args.vae_preset,
                    threads=args.threads, sizes=args.sizes, large_steps=args.large_steps)
    for fam, r in res["families"].items():
        print(f"{fam}: {r['params']:,} params, step off {r['step_ms']['off']:.1f} ms, "
              f"ATE/off {r['ratio']['ate']:.2f} (best variant {r['best_variant']}: {r['ratio'][r['best_variant']]:.2f}), "
              f"predict {r['predict_ms']:.1f} ms/chunk")
    print(f"written {args.out}/results.json, report.md, step_time.png")
    return 0


def _normalizer(args) -> int:
    from ate.checkpoint import write_json_atomic
    from ate.policies import load_policy

    policy = load_policy(args.policy)
    robot, _ = policy.robot_spec(args.robot)
    write_json_atomic(args.out, policy.normalizers[robot]["action"].to_dict())
    print(f"robot {robot!r} action stats written to {args.out}")
    return 0
