"""`ate inspect`: where do target chunks land in the shared latent space, and how well are they rebuilt?

Writes ``inspect.png`` (left: 2-D projection — PCA by default, t-SNE optional — of source latents, target
latents and samples of the prior summary, with axis labels and a legend with counts; right: reconstruction
error per action dimension in normalised units, named when the dataset names its dimensions) and
``inspect.json`` with the numbers, labels and counts behind it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ate.align.checkpoint import load_aligned_vae


@torch.no_grad()
def encode_dataset(bundle, data, max_chunks: int = 2000, seed: int = 0):
    """Encode (a seeded subset of) a dataset's chunks with a VAE bundle, using its own normaliser and chunk
    definition. Returns (μ (N, Z), chunks (N, H, D), reconstructions (N, H, D), is_pad (N, H))."""
    from ate.data import ChunkDataset, load_episodes

    eps = load_episodes(data) if isinstance(data, (str, Path)) else data
    ds = ChunkDataset(eps, horizon=bundle.chunk.get("horizon", bundle.config.horizon), normalizer=bundle.normalizer,
                      pad=bundle.chunk.get("pad", "repeat"))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds), size=min(max_chunks, len(ds)), replace=False))
    mus, recs, acts, pads = [], [], [], []
    for start in range(0, len(idx), 256):
        b = ds[idx[start:start + 256]]
        mu, _ = bundle.vae.encode(b["action"])
        mus.append(mu); recs.append(bundle.vae.decode(mu)); acts.append(b["action"]); pads.append(b["is_pad"])
    return torch.cat(mus), torch.cat(acts), torch.cat(recs), torch.cat(pads)


_UNITS = {"minmax": "normalised action units, min-max to [-1, 1]", "meanstd": "normalised action units, z-score"}
_STYLE = {"source latents": ("tab:gray", 0.25), "target latents": ("tab:red", 0.6), "prior samples": ("tab:blue", 0.15)}
_PRIOR = "prior samples"


def _project(groups: dict[str, np.ndarray], method: str, seed: int, tsne_prior: str = "joint"):
    """2-D view of the latent groups -> (xy per group, axis labels (x, y), info dict, note or None).

    PCA is fitted on the data latents only and the prior samples are projected onto the same axes, so
    the axes (and their explained variance) describe the data. t-SNE has no transform for new points: the
    prior samples are either embedded in ONE joint fit with the data ("joint") or left out ("omit").
    """
    data_names = [n for n in groups if n != _PRIOR]
    data = np.concatenate([groups[n] for n in data_names])
    if method == "pca":
        mean = data.mean(0)
        _, sv, vt = np.linalg.svd(data - mean, full_matrices=False)
        var = sv**2 / max(float((sv**2).sum()), 1e-12)
        xy = {n: (g - mean) @ vt[:2].T for n, g in groups.items()}
        labels = tuple(f"PC {i + 1} ({100 * var[i]:.0f} % var. of {' + '.join(data_names)})" for i in range(2))
        return xy, labels, {"fit_on": data_names, "explained_variance": [round(float(v), 4) for v in var[:2]]}, None
    if method != "tsne":
        raise ValueError(f"unknown projection {method!r}; use pca or tsne")
    if tsne_prior not in ("joint", "omit"):
        raise ValueError(f"unknown tsne_prior {tsne_prior!r}; use joint or omit")
    from sklearn.manifold import TSNE

    names = [n for n in groups if n != _PRIOR or tsne_prior == "joint"]
    stacked = np.concatenate([groups[n] for n in names])
    emb = TSNE(2, random_state=seed, init="pca", perplexity=min(30, max(5, len(stacked) // 10))).fit_transform(stacked)
    xy = dict(zip(names, np.split(emb, np.cumsum([len(groups[n]) for n in names])[:-1])))
    if _PRIOR in groups and tsne_prior == "omit":
        note = "prior samples left out: t-SNE cannot place new points in an existing embedding"
    else:
        note = f"one joint t-SNE fit of all {len(stacked)} points; axes have no units, cluster gaps are not distances"
    return xy, ("t-SNE 1", "t-SNE 2"), {"fit_on": names}, note


def inspect_alignment(model, data, out_dir, source=None, source_data=None, method: str = "pca",
                      max_points: int = 1500, seed: int = 0, tsne_prior: str = "joint") -> dict:
    """model/data: the (target) VAE and its dataset; source/source_data: optionally the stage-1 VAE and
    its dataset, plotted in the same latent space. tsne_prior ("joint" | "omit"): with method="tsne",
    embed the prior samples in the same t-SNE fit as the data, or leave them out (noted on the figure).

    Returns the report also written to inspect.json: counts per group, the figure's axis labels, legend
    and note, the per-dimension names (from the dataset, else "dim i"), and the numbers plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ate.data import load_episodes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = load_aligned_vae(model)
    eps = load_episodes(data) if isinstance(data, (str, Path)) else data
    mu_t, act, rec, pad = encode_dataset(bundle, eps, max_points, seed)
    valid = (~pad).unsqueeze(-1).float()
    recon_per_dim = ((rec - act).abs() * valid).sum((0, 1)) / valid.sum((0, 1)).clamp_min(1)
    dim = len(recon_per_dim)
    names_ok = eps.dim_names is not None and len(eps.dim_names) == dim
    dim_names = list(eps.dim_names) if names_ok else [f"dim {i}" for i in range(dim)]
    groups = {"target latents": mu_t}
    if source is not None and source_data is not None:
        mu_s = encode_dataset(load_aligned_vae(source), source_data, max_points, seed)[0]
        groups = {"source latents": mu_s, **groups}
    prior = bundle.prior
    if prior is not None:
        groups[_PRIOR] = prior.sample(min(max_points, 1000), generator=torch.Generator().manual_seed(seed))
    groups = {n: g.numpy() for n, g in groups.items()}
    xy, (xlabel, ylabel), proj_info, note = _project(groups, method, seed, tsne_prior)

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1]})
    legend = []
    for name, pts in xy.items():
        colour, alpha = _STYLE[name]
        legend.append(f"{name} (n={len(pts)})")
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c=colour, alpha=alpha, label=legend[-1], rasterized=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    title = f"latent means μ, {'PCA' if method == 'pca' else 't-SNE'} (prior: {prior.kind if prior else 'none'})"
    ax.set_title(title)
    # legend and note sit below the axes so they never hide points
    leg = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(legend), markerscale=3,
                    fontsize=9, frameon=False, handletextpad=0.2, columnspacing=1.0)
    for handle in leg.legend_handles:
        handle.set_alpha(1.0)
    if note:
        ax.annotate(note, xy=(0.5, -0.22), xycoords="axes fraction", ha="center", va="top", fontsize=8,
                    style="italic")
    units = _UNITS.get(bundle.normalizer.mode, f"normalised action units, {bundle.normalizer.mode}")
    err_labels = ("action dimension", f"mean |reconstruction − input|\n({units})")
    bx.bar(np.arange(dim), recon_per_dim.numpy(), color="tab:red")
    bx.set_xticks(np.arange(dim), dim_names, rotation=45 if max(map(len, dim_names)) > 6 else 0,
                  ha="right" if max(map(len, dim_names)) > 6 else "center", fontsize=8 if dim > 12 else 10)
    bx.set_xlabel(err_labels[0])
    bx.set_ylabel(err_labels[1])
    err_title = f"target reconstruction error per dimension (n={len(act)} chunks)"
    bx.set_title(err_title)
    fig.tight_layout()
    png = out_dir / "inspect.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)

    report = {"png": str(png), "method": method, "prior": prior.describe() if prior else None,
              "counts": {n: len(g) for n, g in xy.items()},
              "figure": {"projection": {"title": title, "xlabel": xlabel, "ylabel": ylabel, "legend": legend,
                                        "note": note, **proj_info},
                         "error": {"title": err_title, "xlabel": err_labels[0],
                                   "ylabel": err_labels[1].replace("\n", " ")}},
              "dim_names": dim_names, "dim_names_from": "dataset" if names_ok else "index",
              "recon_per_dim": [round(v, 5) for v in recon_per_dim.tolist()],
              "target_logp": float(prior.log_prob(mu_t).mean()) if prior else None,
              "source_logp": float(prior.log_prob(torch.from_numpy(groups["source latents"])).mean())
              if prior and "source latents" in groups else None}
    (out_dir / "inspect.json").write_text(json.dumps(report, indent=2))
    return report
