"""`ate convert`: reference trainer state dict (.pt/.pth) -> ate safetensors checkpoint."""


def _command(argv: list[str]):
    from ate.cli._fields import INT_GE1
    from ate.cli._tyro import option, simple_command

    return simple_command("ate convert", "Convert a reference ATE VAE state dict (.pt / .pth, torch.save of the "
                                         "reference trainer) to an ate checkpoint (safetensors + JSON config).", [
        option("checkpoint", str, "reference .pt/.pth file (torch.save of the state dict)", positional=True,
               metavar="CHECKPOINT"),
        option("out", str, "model directory to write (what load_aligned_vae reads)"),
        option("horizon", int, "chunk length the VAE was trained on", type=INT_GE1),
        option("num_heads", int, "attention heads (not visible in shapes; reference 4)", 4, type=INT_GE1),
        option("data", str | None, "optional dataset: fit normalisation stats and an aggregate prior on it", None),
        option("normalization", str, "stats fitted on --data: minmax = [-1, 1] (DP), meanstd (pi0)", "minmax",
               choices=("minmax", "meanstd")),
    ], _run)


def register(sub) -> None:
    from ate.cli._tyro import register_tyro

    register_tyro(sub, "convert", "convert a reference ATE VAE state dict to an ate checkpoint", _command)


def _run(args) -> int:
    from ate.align.convert import convert_reference, load_reference_vae

    norm = prior = None
    if args.data:
        from ate.align.prior import fit_prior
        from ate.data import ChunkDataset, Normalizer, load_episodes

        eps = load_episodes(args.data)
        norm = Normalizer.fit(eps, mode=args.normalization)
        vae = load_reference_vae(args.checkpoint, args.horizon, args.num_heads).eval()
        prior = fit_prior(vae, ChunkDataset(eps, args.horizon, norm, pad="drop"), "aggregate", progress=True)
    out = convert_reference(args.checkpoint, args.out, args.horizon, norm, args.num_heads, prior)
    print(f"wrote {out}")
    return 0
