"""`ate inspect`: latent projection + reconstruction errors of an aligned VAE."""


def register(sub) -> None:
    from ate.cli._fields import INT_GE1

    p = sub.add_parser("inspect", help="plot source/target latents, the prior summary and reconstruction errors")
    p.add_argument("--model", required=True, help="VAE run or model dir (usually stage 2)")
    p.add_argument("--data", required=True, help="dataset of that VAE (target data)")
    p.add_argument("--source", default=None, help="stage-1 run or model dir to plot alongside")
    p.add_argument("--source-data", default=None, help="source dataset (with --source)")
    p.add_argument("--method", choices=("pca", "tsne"), default="pca",
                   help="2-D projection of the latents (default: %(default)s)")
    p.add_argument("--tsne-prior", choices=("joint", "omit"), default="joint",
                   help="with --method tsne: embed the prior samples in the same t-SNE fit as the data (joint), "
                        "or leave them out with a note on the plot (omit); t-SNE cannot place new points "
                        "(default: %(default)s)")
    p.add_argument("--max-points", type=INT_GE1, default=1500,
                   help="latents plotted per dataset, a seeded subset (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory for the plot and the summary")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ate.align.inspect import inspect_alignment

    r = inspect_alignment(args.model, args.data, args.out, args.source, args.source_data, args.method, args.max_points,
                          tsne_prior=args.tsne_prior)
    print(f"wrote {r['png']}; prior {r['prior']}; target mean log p {r['target_logp']}")
    print("points plotted:", ", ".join(f"{n} {c}" for n, c in r["counts"].items()))
    print("reconstruction error per dim:", dict(zip(r["dim_names"], r["recon_per_dim"])))
    return 0
