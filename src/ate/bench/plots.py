"""PNG plots of a results dict (`ate.bench.report`): success per arm with 95 % CIs, success vs
fine-tuning steps, success vs number of target demos. matplotlib with the Agg backend (headless)."""

from __future__ import annotations

from pathlib import Path

from ate.bench.report import config_arms, config_headline

ARM_COLORS = {"sft": "#4C72B0", "ate": "#DD8452", "ate_paper": "#C44E52", "ate_unaligned": "#937860",
              "lora": "#55A868", "anchor": "#8172B3", "scratch": "#8C8C8C"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (headless: CI, servers, the simulator workers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rows(results: dict, **match) -> list[dict]:
    return [s for s in results["summary"] if all(s[k] == v for k, v in match.items())]


def plot_success_by_arm(results: dict, path: Path) -> Path:
    """Grouped bars: tasks (+ mean) × arms at the final step and the first n_demos; dots = training seeds."""
    plt = pyplot()
    cfg = results["config"]
    tasks = ["all", *cfg["target_tasks"]] if len(cfg["target_tasks"]) > 1 else ["all"]
    arms = config_arms(cfg)
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(tasks) * len(arms) / 2 + 2), 3.6))
    for ai, arm in enumerate(arms):
        for ti, task in enumerate(tasks):
            s = _rows(results, arm=arm, n_demos=config_headline(cfg), step=cfg["finetune_steps"], task=task)
            if not s:
                continue
            s = s[0]
            x = ti + (ai - (len(arms) - 1) / 2) * width
            y = 100 * s["success_rate"]
            err = [[y - 100 * s["ci95"][0]], [100 * s["ci95"][1] - y]]
            ax.bar(x, y, width * 0.9, color=ARM_COLORS.get(arm, None), label=arm.upper() if ti == 0 else None,
                   yerr=err, capsize=3)
            ax.scatter([x] * len(s["per_seed"]), [100 * v for v in s["per_seed"]], s=10, color="black", zorder=3)
    ax.set_xticks(range(len(tasks)), ["mean" if t == "all" else t for t in tasks])
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{results['suite']} {results['preset']}: {cfg['target_robot']}, {config_headline(cfg)} demos/task")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _line_plot(results: dict, path: Path, xkey: str, fixed: dict, xlabel: str) -> Path:
    plt = pyplot()
    cfg = results["config"]
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for arm in config_arms(cfg):
        rows = sorted(_rows(results, arm=arm, task="all", **fixed), key=lambda s: s[xkey])
        if not rows:
            continue
        xs = [s[xkey] for s in rows]
        ys = [100 * s["success_rate"] for s in rows]
        ax.plot(xs, ys, marker="o", color=ARM_COLORS.get(arm), label=arm.upper())
        ax.fill_between(xs, [100 * s["ci95"][0] for s in rows], [100 * s["ci95"][1] for s in rows],
                        color=ARM_COLORS.get(arm), alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("success rate (%), mean over tasks")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(results: dict, run_dir: Path) -> dict[str, Path]:
    """Write every plot the results support; returns {name: path}."""
    cfg = results["config"]
    run_dir = Path(run_dir)
    out = {"success_by_arm": plot_success_by_arm(results, run_dir / "success_by_arm.png")}
    n0 = config_headline(cfg)
    if len({s["step"] for s in results["summary"] if s["n_demos"] == n0}) > 1:
        out["success_vs_steps"] = _line_plot(results, run_dir / "success_vs_steps.png", "step", {"n_demos": n0},
                                             f"fine-tuning steps ({n0} demos/task)")
    if len(cfg["n_target_demos"]) > 1:
        out["success_vs_demos"] = _line_plot(results, run_dir / "success_vs_demos.png", "n_demos",
                                             {"step": cfg["finetune_steps"]}, "target demos per task")
    return out
