"""`ate inspect`: latent projection + reconstruction errors of an aligned VAE."""


def _command(argv: list[str]):
    from ate.cli._fields import INT_GE1
    from ate.cli._tyro import option, simple_command

    return simple_command("ate inspect", "Plot source / target latents, the prior summary and reconstruction errors "
                                         "of an aligned VAE.", [
        option("model", str, "VAE run or model dir (usually stage 2)"),
        option("data", str, "dataset of that VAE (target data)"),
        option("source", str | None, "stage-1 run or model dir to plot alongside", None),
        option("source_data", str | None, "source dataset (with --source)", None),
        option("method", str, "2-D projection of the latents", "pca", choices=("pca", "tsne")),
        option("tsne_prior", str, "with --method tsne: embed the prior samples in the same t-SNE fit as the data "
                                  "(joint), or leave them out with a note on the plot (omit); t-SNE cannot place new "
                                  "points", "joint", choices=("joint", "omit")),
        option("max_points", int, "latents plotted per dataset, a seeded subset", 1500, type=INT_GE1),
        option("out", str, "output directory for the plot and the summary"),
    ], _run)


def register(sub) -> None:
    from ate.cli._tyro import register_tyro

    register_tyro(sub, "inspect", "plot source/target latents, the prior summary and reconstruction errors", _command)


def _run(args) -> int:
    from ate.align.inspect import inspect_alignment

    r = inspect_alignment(args.model, args.data, args.out, args.source, args.source_data, args.method, args.max_points,
                          tsne_prior=args.tsne_prior)
    print(f"wrote {r['png']}; prior {r['prior']}; target mean log p {r['target_logp']}")
    print("points plotted:", ", ".join(f"{n} {c}" for n, c in r["counts"].items()))
    print("reconstruction error per dim:", dict(zip(r["dim_names"], r["recon_per_dim"])))
    return 0
