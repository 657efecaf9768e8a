"""`ate inspect`: the figure says what its axes are, how many points each group has and which dimension
each error bar belongs to; the t-SNE view never mixes separately fitted embeddings."""

from __future__ import annotations

import json

import pytest

from ate.align.inspect import inspect_alignment
from ate.data import load_episodes


@pytest.fixture(scope="module")
def toy_pair(tmp_path_factory):
    """A 2-step stage 1 and stage 2 on tiny toy data (seconds on CPU)."""
    from ate.align.train import AlignConfig, train_stage1, train_stage2
    from ate.bench.synthetic import write_toy_npz

    root = tmp_path_factory.mktemp("inspect")
    src = write_toy_npz(root / "src.npz", 6, 30, 3, seed=0)
    tgt = write_toy_npz(root / "tgt.npz", 3, 20, 3, seed=1, domain="target")
    cfg = dict(preset="small", latent_dim=4, horizon=8, batch_size=8, steps=2, eval_every=1000, progress=False,
               val_ratio=0)
    m1 = train_stage1(src, root / "s1", AlignConfig(**cfg))
    m2 = train_stage2(tgt, root / "s2", m1, AlignConfig(**cfg))
    return root, src, tgt, m1, m2


def test_pca_labels_legend_counts_and_dim_names(toy_pair):
    root, src, tgt, m1, m2 = toy_pair
    eps = load_episodes(tgt)
    eps.dim_names = ["x", "y", "gripper"]  # as a LeRobot info.json would give them
    r = inspect_alignment(m2, eps, root / "pca", source=m1, source_data=src, max_points=40)
    assert r == json.loads((root / "pca" / "inspect.json").read_text())
    assert (root / "pca" / "inspect.png").stat().st_size > 0
    counts = r["counts"]
    assert counts == {"source latents": 40, "target latents": 40, "prior samples": 40}
    proj = r["figure"]["projection"]
    assert proj["legend"] == ["source latents (n=40)", "target latents (n=40)", "prior samples (n=40)"]
    assert proj["xlabel"].startswith("PC 1 (") and "% var." in proj["xlabel"] and proj["ylabel"].startswith("PC 2 (")
    assert proj["fit_on"] == ["source latents", "target latents"]  # axes describe the data, prior projected
    assert proj["note"] is None
    assert "normalised action units" in r["figure"]["error"]["ylabel"]
    assert r["dim_names"] == ["x", "y", "gripper"] and r["dim_names_from"] == "dataset"


def test_unnamed_dims_are_indexed_not_invented(toy_pair):
    root, _, tgt, _, m2 = toy_pair
    r = inspect_alignment(m2, tgt, root / "plain", max_points=30)
    assert r["dim_names"] == ["dim 0", "dim 1", "dim 2"] and r["dim_names_from"] == "index"
    assert r["figure"]["projection"]["legend"] == ["target latents (n=30)", "prior samples (n=30)"]


@pytest.mark.parametrize("tsne_prior", ["joint", "omit"])
def test_tsne_embeds_the_prior_jointly_or_notes_its_absence(toy_pair, tsne_prior):
    pytest.importorskip("sklearn")
    root, src, tgt, m1, m2 = toy_pair
    r = inspect_alignment(m2, tgt, root / tsne_prior, source=m1, source_data=src, method="tsne", max_points=30,
                          tsne_prior=tsne_prior)
    proj = r["figure"]["projection"]
    assert (proj["xlabel"], proj["ylabel"]) == ("t-SNE 1", "t-SNE 2")
    if tsne_prior == "joint":
        assert proj["fit_on"] == ["source latents", "target latents", "prior samples"]  # ONE fit, all points
        assert r["counts"]["prior samples"] == 30 and "joint t-SNE fit of all 90 points" in proj["note"]
    else:
        assert "prior samples" not in r["counts"] and "prior samples" not in proj["fit_on"]
        assert not any(entry.startswith("prior") for entry in proj["legend"])
        assert proj["note"].startswith("prior samples left out")


def test_cli_prints_counts_and_named_errors(toy_pair):
    import subprocess
    import sys

    root, _, tgt, _, m2 = toy_pair
    out = subprocess.run([sys.executable, "-m", "ate", "inspect", "--model", str(m2), "--data", str(tgt),
                          "--method", "pca", "--max-points", "20", "--out", str(root / "cli")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "points plotted: target latents 20, prior samples 20" in out.stdout
    assert "'dim 0':" in out.stdout
