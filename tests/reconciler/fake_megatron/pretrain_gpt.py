"""A fake of Megatron-LM's pretrain_gpt.py for tests: it trains nothing, and logs like
Megatron's `training_log` (2024 format), with a loss that falls faster for a larger --lr."""

import argparse
import math
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=1e-4)
parser.add_argument("--train-iters", type=int, default=20)
parser.add_argument("--seq-length", type=int, default=256)
parser.add_argument("--global-batch-size", type=int, default=8)
parser.add_argument("--save", default=None)
parser.add_argument("--wandb-project", default=None)
args, _ = parser.parse_known_args()

print("------------------------ arguments ------------------------")
for name, value in sorted(vars(args).items()):
    print("  {} {} {}".format(name, "." * (48 - len(name)), value))
print("-------------------- end of arguments ---------------------")
for it in range(1, args.train_iters + 1):
    loss = 10.0 * math.exp(-args.lr * 2000 * it / args.train_iters) + 1.0
    line = f" [2024-09-06 08:00:{it % 60:02d}] iteration {it:8d}/{args.train_iters:8d} |"
    line += f" consumed samples: {it * args.global_batch_size:12d} |"
    line += f" elapsed time per iteration (ms): {100.0 + it:.1f} |"
    line += f" throughput per GPU (TFLOP/s/GPU): {150.0 + 1000 * args.lr:.1f} |"
    line += f" learning rate: {args.lr:.6E} |"
    line += f" global batch size: {args.global_batch_size:5d} |"
    line += f" lm loss: {loss:.6E} |"
    line += " loss scale: 1.0 | grad norm: 1.000 |"
    line += " number of skipped iterations:   0 | number of nan iterations:   0 |"
    print(line)
if args.wandb_project and args.save:
    # As wandb.init(dir=<save>/wandb) does in offline mode (megatron/training/global_vars.py).
    run = os.path.join(args.save, "wandb", "wandb", "offline-run-20240906_080000-")
    run += os.environ["WANDB_RUN_ID"]
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "run.wandb"), "a") as handle:
        handle.write(f"{args.train_iters} iterations\n")
sys.exit(0)
