"""`ate inspect`: where do target chunks land in the shared latent space, and how well are they rebuilt?

Writes ``inspect.png`` (left: 2-D projection — PCA by default, t-SNE optional — of source latents, target
latents and samples of the prior summary; right: reconstruction error per action dimension) and
``inspect.json`` with the numbers behind it.
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


def _project(points: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "pca":
        centred = points - points.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, random_state=seed, init="pca", perplexity=min(30, max(5, len(points) // 10))).fit_transform(points)
    raise ValueError(f"unknown projection {method!r}; use pca or tsne")


def inspect_alignment(model, data, out_dir, source=None, source_data=None, method: str = "pca",
                      max_points: int = 1500, seed: int = 0) -> dict:
    """model/data: the (target) VAE and its dataset; source/source_data: optionally the stage-1 VAE and
    its dataset, plotted in the same latent space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = load_aligned_vae(model)
    mu_t, act, rec, pad = encode_dataset(bundle, data, max_points, seed)
    valid = (~pad).unsqueeze(-1).float()
    recon_per_dim = ((rec - act).abs() * valid).sum((0, 1)) / valid.sum((0, 1)).clamp_min(1)
    groups = {"target": mu_t}
    if source is not None and source_data is not None:
        groups = {"source": encode_dataset(load_aligned_vae(source), source_data, max_points, seed)[0], **groups}
    prior = bundle.prior
    if prior is not None:
        groups["prior samples"] = prior.sample(min(max_points, 1000), generator=torch.Generator().manual_seed(seed))
    names = list(groups)
    stacked = torch.cat([groups[n] for n in names]).numpy()
    xy = _project(stacked, method, seed)
    splits = np.cumsum([len(groups[n]) for n in names])[:-1]

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5))
    style = {"source": ("tab:gray", 0.25), "target": ("tab:red", 0.6), "prior samples": ("tab:blue", 0.15)}
    for name, pts in zip(names, np.split(xy, splits)):
        colour, alpha = style[name]
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c=colour, alpha=alpha, label=f"{name} ({len(pts)})")
    ax.set_title(f"latent space ({method.upper()}), prior: {prior.kind if prior else 'none'}")
    ax.legend(loc="best", markerscale=3)
    bx.bar(np.arange(len(recon_per_dim)), recon_per_dim.numpy(), color="tab:red")
    bx.set_xlabel("action dimension")
    bx.set_ylabel("mean |reconstruction error| (normalised units)")
    bx.set_title("target reconstruction error per dimension")
    fig.tight_layout()
    png = out_dir / "inspect.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)

    report = {"png": str(png), "method": method, "prior": prior.describe() if prior else None,
              "recon_per_dim": [round(v, 5) for v in recon_per_dim.tolist()],
              "target_logp": float(prior.log_prob(mu_t).mean()) if prior else None,
              "source_logp": float(prior.log_prob(groups["source"]).mean()) if prior and "source" in groups else None}
    (out_dir / "inspect.json").write_text(json.dumps(report, indent=2))
    return report
