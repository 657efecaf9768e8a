"""PNG plots of a regime summary (`ate.bench.regime`): one panel per policy family, one row per suite.

success_vs_demos.png (every arm, CI error bars, log-x), delta_vs_sft.png (ATE arms and the anchor arm − SFT,
paired CIs) and guidance_profile.png (‖λ·c·g‖ / residual by noise level, log-y). matplotlib on the Agg backend.
"""

from __future__ import annotations

from pathlib import Path

from ate.bench.plots import ARM_COLORS, pyplot

COLORS = {**ARM_COLORS, "ate_best": ARM_COLORS["ate"]}


def _grid(summary: dict):
    """(suites, families) that hold at least one run: the rows and columns of every figure."""
    suites = [s for s, fams in summary["suites"].items() if any(fams.values())]
    families = [f for f in ("dp", "rdt", "pi0") if any(summary["suites"][s].get(f) for s in suites)]
    return suites, families


def _figure(summary: dict, draw, path: Path, ylabel: str) -> Path:
    plt = pyplot()
    suites, families = _grid(summary)
    fig, axes = plt.subplots(len(suites), len(families), figsize=(4.4 * len(families), 3.4 * len(suites)),
                             squeeze=False)
    for i, suite in enumerate(suites):
        for j, family in enumerate(families):
            ax = axes[i][j]
            entry = summary["suites"][suite].get(family) or {}
            ax.set_title(f"{suite} / {family}" + (f" ({entry['split']})" if entry else ""), fontsize=10)
            empty = "no run" if not entry else draw(ax, entry)  # draw returns None, or why nothing is drawn
            if empty:
                ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="gray")
                ax.set_xticks([])
                ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _errorbars(ax, cells: dict, arm: str, key: str | None, offset: float) -> bool:
    """One arm's points (demos, mean) with CI bars; `key` picks a sub-record (delta_vs_sft)."""
    pts = [(int(n), c[key] if key else c) for n, c in cells.items() if (c.get(key) if key else c)]
    if not pts:
        return False
    xs = [n * offset for n, _ in pts]  # multiplicative offset: arms side by side on the log axis
    ys = [p["mean"] for _, p in pts]
    err = [[y - p["ci"][0] for y, (_, p) in zip(ys, pts)], [p["ci"][1] - y for y, (_, p) in zip(ys, pts)]]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=COLORS.get(arm), label=arm)
    return True


def _demos_axis(ax, entry: dict) -> None:
    demos = sorted({int(n) for cells in entry["arms"].values() for n in cells})
    ax.set_xscale("log")
    ax.set_xticks(demos, [str(n) for n in demos])
    ax.minorticks_off()
    ax.set_xlim(demos[0] / 1.6, demos[-1] * 1.6)  # room for the side-by-side offsets, even for one demos count
    ax.set_xlabel("target demos per task")


def plot_success_vs_demos(summary: dict, path: Path) -> Path:
    def draw(ax, entry):
        arms = [a for a, cells in entry["arms"].items() if cells]
        drawn = [_errorbars(ax, entry["arms"][a], a, None, 1.03 ** (k - (len(arms) - 1) / 2)) for k, a in enumerate(arms)]
        if any(drawn):
            _demos_axis(ax, entry)
            ax.set_ylim(0, 100)
            ax.legend(frameon=False, fontsize=7)
        return None if any(drawn) else "no final-step rows"

    return _figure(summary, draw, path, "success (%), all target tasks")


def plot_delta_vs_sft(summary: dict, path: Path) -> Path:
    def draw(ax, entry):
        arms = [a for a in ("ate_paper", "ate_best", "ate_unaligned", "anchor") if entry["arms"].get(a)]
        drawn = [_errorbars(ax, entry["arms"][a], a, "delta_vs_sft", 1.03 ** (k - (len(arms) - 1) / 2))
                 for k, a in enumerate(arms)]
        if any(drawn):
            ax.axhline(0.0, color="black", lw=0.8)
            _demos_axis(ax, entry)
            ax.legend(frameon=False, fontsize=7)
        return None if any(drawn) else "no ATE or anchor arm compared with SFT"

    return _figure(summary, draw, path, "arm − SFT (points), paired 95 % CI")


def plot_guidance_profile(summary: dict, path: Path) -> Path:
    def draw(ax, entry):
        prof = entry.get("guidance_profile") or {}
        drawn = False
        for arm, p in prof.items():
            pts = [(x, y, lo, hi) for x, y, lo, hi in zip(p["noise_level"], p["rel_strength"], p["rel_strength_min"],
                                                         p["rel_strength_max"]) if y > 0]
            if not pts:  # zero everywhere (e.g. a noise window excluding the grid) has no log-scale point
                continue
            xs, ys, lo, hi = zip(*pts)
            ax.plot(xs, ys, marker="o", color=COLORS.get(arm), label=f"{arm} ({p['profiles']} demos × seeds)")
            ax.fill_between(xs, lo, hi, color=COLORS.get(arm), alpha=0.15)
            drawn = True
        if drawn:
            ax.set_yscale("log")
            ax.set_xlim(0, 1)
            ax.set_xlabel("noise level (0 clean, 1 pure noise)")
            ax.legend(frameon=False, fontsize=7)
        return None if drawn else "no profile"

    return _figure(summary, draw, path, "‖λ·c·g‖ / residual")


def write_plots(summary: dict, out_dir: Path) -> dict[str, Path]:
    from ate._optional import require

    require("matplotlib", "viz", "the regime summary's plots")  # an optional extra: one line if missing
    out_dir = Path(out_dir)
    if not _grid(summary)[0]:
        return {}
    return {"success_vs_demos": plot_success_vs_demos(summary, out_dir / "success_vs_demos.png"),
            "delta_vs_sft": plot_delta_vs_sft(summary, out_dir / "delta_vs_sft.png"),
            "guidance_profile": plot_guidance_profile(summary, out_dir / "guidance_profile.png")}
