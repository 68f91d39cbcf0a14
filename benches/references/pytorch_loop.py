"""PyTorch's own eager training loop on Fashion-MNIST, timed per epoch.

A measurement harness for `cargo xtask bench --references`, not part of parallax. It trains
parallax's `mlp` (784-128-10) or `cnn` (conv32-pool-conv64-pool-fc128-fc10, 3x3 "same"
convolutions, 2x2 pooling) preset the way a PyTorch user writes it: tensors already in memory,
a shuffled index per epoch, `torch.optim.Adam(lr=1e-3)` with its defaults, and the loss read
back with `.item()` at every step (as parallax's engines read theirs). The epoch time covers
the training loop only, as parallax's records do. It prints one JSON object.
"""

import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from fashion_mnist import run_arguments, training_set


def model(name):
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )
    raise SystemExit(f"unknown model {name}: mlp or cnn")


def main():
    args = run_arguments(__doc__)

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    images, labels = training_set(args.data, args.limit_train)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    net = model(args.model)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(42)
    net.train()
    epochs = []
    for _ in range(args.epochs):
        order = torch.randperm(len(x), generator=generator)
        start = time.perf_counter()
        total = 0.0
        for i in range(0, len(x), args.batch_size):
            index = order[i : i + args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x[index]), y[index])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        epochs.append({"seconds": time.perf_counter() - start, "train_loss": total / len(x)})
    print(json.dumps({
        "framework": f"PyTorch {torch.__version__}",
        "loop": "eager Python loop, torch.optim.Adam (foreach=None: the per-tensor loop on the CPU)",
        "threads": torch.get_num_threads(),
        "examples": len(x),
        "epochs": epochs,
    }))


if __name__ == "__main__":
    main()
