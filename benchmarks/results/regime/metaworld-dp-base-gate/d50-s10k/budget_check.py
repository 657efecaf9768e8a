"""Pretrained dp on its source tasks: success within 200 vs 500 steps, and action_steps 8 vs 4."""
import json, sys
from ate.bench.sims.evaluate import evaluate
from ate.bench.sims.pool import WorkerPool
from ate.bench.pipeline import EvalPolicy  # noqa
from ate.policies import load_policy


def main():
    model = sys.argv[1]
    tasks = ["reach-v3", "push-v3", "pick-place-v3", "sweep-v3", "basketball-v3", "peg-insert-side-v3"]
    pol = load_policy(model)
    pool = WorkerPool(2)
    out = {}
    for task in tasks:
        for ms, a in ((500, 8), (200, 4)):
            rows = evaluate(EvalPolicy(model, "Sawyer"), "metaworld", task, "Sawyer", seeds=range(200000, 200020), pool=pool,
                            action_steps=a, task_index=pol.task_id(task), max_steps=ms, progress=False)
            k = sum(r["success"] for r in rows)
            steps = sorted(r["steps"] for r in rows if r["success"])
            out[f"{task} max{ms} a{a}"] = (k, steps)
            print(task, ms, a, k, steps, flush=True)
    json.dump(out, open(sys.argv[2], "w"), indent=1)


if __name__ == '__main__':
    main()
