"""`ate convert`: reference trainer state dict (.pt/.pth) -> ate safetensors checkpoint."""


def register(sub) -> None:
    from ate.cli._fields import INT_GE1

    p = sub.add_parser("convert", help="convert a reference ATE VAE state dict to an ate checkpoint")
    p.add_argument("checkpoint", help="reference .pt/.pth file (torch.save of the state dict)")
    p.add_argument("--out", required=True, help="model directory to write (what load_aligned_vae reads)")
    p.add_argument("--horizon", type=INT_GE1, required=True, help="chunk length the VAE was trained on")
    p.add_argument("--num-heads", type=INT_GE1, default=4, help="attention heads (not visible in shapes; reference 4)")
    p.add_argument("--data", default=None, help="optional dataset: fit normalisation stats and an aggregate prior on it")
    p.add_argument("--normalization", choices=("minmax", "meanstd"), default="minmax",
                   help="stats fitted on --data: minmax = [-1, 1] (DP), meanstd (pi0) (default: %(default)s)")
    p.set_defaults(func=_run)


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
