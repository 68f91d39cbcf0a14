"""PyTorch's own training step split into phases, with torch.profiler's busiest operators.

A measurement harness for `cargo xtask bench --references`, not part of parallax. It splits
the step of `pytorch_loop.py` as parallax's engines split theirs (`benches/benches/
step_phases.rs`): batch in (indexing the in-memory tensors), forward and loss, backward,
optimizer, loss read back. After 10 warm-up steps it profiles `--steps` steps and prints one
JSON object: each phase's median milliseconds, and torch.profiler's table of the operators
with the most CPU time over 20 further steps.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from fashion_mnist import training_set
from pytorch_loop import model

WARM_UP = 10


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    images, labels = training_set(args.data, 2000)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    net = model(args.model)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(42))
    batches = len(x) // args.batch_size
    net.train()

    def step(i, laps):
        index = order[(i % batches) * args.batch_size:][: args.batch_size]
        t0 = time.perf_counter()
        xb, yb = x[index], y[index]
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(xb), yb)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        loss.item()
        t5 = time.perf_counter()
        if laps is not None:
            for name, seconds in zip(
                ["input", "forward", "backward", "optimizer", "readback"],
                [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4],
            ):
                laps.setdefault(name, []).append(seconds * 1e3)
            laps.setdefault("step", []).append((t5 - t0) * 1e3)

    for i in range(WARM_UP):
        step(i, None)
    laps = {}
    for i in range(args.steps):
        step(WARM_UP + i, laps)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for i in range(20):
            step(i, None)
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    print(json.dumps({
        "framework": f"PyTorch {torch.__version__}",
        "phases": {name: statistics.median(values) for name, values in laps.items()},
        "profile": table,
    }))


if __name__ == "__main__":
    main()
