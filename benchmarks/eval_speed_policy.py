"""The policies `python -m ate.bench.eval_speed` was measured with (benchmarks/results/eval-speed/).

    python benchmarks/eval_speed_policy.py metaworld 1500 /tmp/evalfast   # -> /tmp/evalfast/metaworld/pretrain/pretrained_model
    python benchmarks/eval_speed_policy.py robosuite 1500 /tmp/evalfast

A quick-preset `dp` policy (horizon 16, pretrain lr 1e-3, batch 64) on the quick preset's source data,
cut down to fit a few minutes: MetaWorld 10 demos of the first 5 ML10 train tasks, robosuite 20 Lift
demos each of Panda and IIWA; 1500 steps instead of 3000. Speed does not depend on how good it is,
but a policy that succeeds on some seeds and fails on others makes the "identical episodes" check bite.
"""

import sys
import time
from pathlib import Path

import torch

from ate.bench.pipeline import BenchConfig, _link_dir
from ate.bench.sims import generate_demos
from ate.policies.train import pretrain


def main() -> None:
    suite, steps, root = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]) / sys.argv[1]
    torch.set_num_threads(1)
    cfg = BenchConfig.from_preset(suite, "quick")
    n, tasks = (10, cfg.source_tasks[:5]) if suite == "metaworld" else (20, cfg.source_tasks)
    t0, dirs = time.time(), []
    for robot in cfg.source_robots:
        for task in tasks:
            paths = generate_demos(suite, task, robot, n=n, seed=0, out_dir=root / "demos" / f"{task}-{robot}",
                                   workers=2, progress=False)
            dirs.append(_link_dir(root / "data" / f"{task}-{robot}", paths))
    print(f"demos {time.time() - t0:.0f} s", flush=True)
    pretrain(dirs, root / "pretrain", policy="dp", policy_config=cfg.policy_config, steps=steps, lr=cfg.pretrain_lr,
             seed=0, batch_size=cfg.batch_size, progress=False)
    print(f"done {time.time() - t0:.0f} s: {root / 'pretrain' / 'pretrained_model'}", flush=True)


if __name__ == "__main__":
    main()
