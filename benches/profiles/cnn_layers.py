"""Where a cnn training step's time goes in libtorch's own kernels: each layer alone, in plain
PyTorch, against the roofline of the machine it runs on. The minimal reproduction behind
docs/bench.md's utilisation section: no parallax code, the cnn preset's layers as PyTorch
modules, 2 threads, channels-last activations (as tch runs them) and NCHW (PyTorch's default).

For each batch (64 and 256) and layout, each layer's forward pass (training mode) and its
backward pass (from a gradient of ones, to its parameters and, after the first layer, its
input) are timed alone, 20 times after 3 warm-ups; the medians. Beside them, the layer's
multiply-add FLOPs, the bytes it moves (every tensor read or written once, f32; core's
`parallax_core::roofline` estimates them the same way), and its floor: the larger of FLOPs over
the f32 matrix-product peak and bytes over the stream-copy bandwidth, both measured first in
this process (a 2048x2048 matmul, best of 5; a copy of 256 MiB, best of 5, each byte counted
read and written). "x floor" is the time over the floor: near 1, the kernel runs at the
machine's ceiling; far above, the kernel is the limit.

Run with the frameworks' environment's Python (`cargo xtask setup`):
  $PARALLAX_FRAMEWORKS_VENV/bin/python benches/profiles/cnn_layers.py [BATCH ...]
"""
import sys
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)
F32 = 4


def best(function, repeats=5):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def ceilings():
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    peak = 2 * 2048**3 / best(lambda: a @ b)
    source = torch.empty(256 * 2**20 // F32)
    target = torch.empty_like(source)
    bandwidth = 2 * source.numel() * F32 / best(lambda: target.copy_(source))
    return peak, bandwidth


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def layers(batch):
    """The cnn preset's layers with their input shapes, forward and backward FLOPs and bytes."""
    n = batch
    conv = lambda cin, cout: torch.nn.Conv2d(cin, cout, 3, padding=1)  # noqa: E731
    specs = []

    def add(name, module, shape, flops_forward, flops_backward, weights, out_values):
        in_values = 1
        for size in shape:
            in_values *= size
        moved_forward = (in_values + weights + out_values) * F32
        moved_backward = (out_values + in_values + weights + in_values + weights) * F32
        specs.append((name, module, shape, flops_forward, flops_backward, moved_forward, moved_backward))

    c1 = 2 * n * 32 * 28 * 28 * 1 * 9
    add("conv1 1->32 28x28", conv(1, 32), (n, 1, 28, 28), c1, c1, 32 * 9 + 32, n * 32 * 28 * 28)
    add("relu1", torch.nn.ReLU(), (n, 32, 28, 28), 0, 0, 0, n * 32 * 28 * 28)
    add("pool1 2x2", torch.nn.MaxPool2d(2), (n, 32, 28, 28), 0, 0, 0, n * 32 * 14 * 14)
    c2 = 2 * n * 64 * 14 * 14 * 32 * 9
    add("conv2 32->64 14x14", conv(32, 64), (n, 32, 14, 14), c2, 2 * c2, 64 * 32 * 9 + 64, n * 64 * 14 * 14)
    add("relu2", torch.nn.ReLU(), (n, 64, 14, 14), 0, 0, 0, n * 64 * 14 * 14)
    add("pool2 2x2", torch.nn.MaxPool2d(2), (n, 64, 14, 14), 0, 0, 0, n * 64 * 7 * 7)
    d1 = 2 * n * 3136 * 128
    add("fc1 3136->128", torch.nn.Linear(3136, 128), (n, 3136), d1, 2 * d1, 3136 * 128 + 128, n * 128)
    add("relu3", torch.nn.ReLU(), (n, 128), 0, 0, 0, n * 128)
    d2 = 2 * n * 128 * 10
    add("fc2 128->10", torch.nn.Linear(128, 10), (n, 128), d2, 2 * d2, 128 * 10 + 10, n * 10)
    return specs


def time_layer(module, shape, channels_last, first):
    x = torch.randn(*shape)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
        module = module.to(memory_format=torch.channels_last)
    parameters = [p for p in module.parameters()]
    forwards, backwards = [], []
    for repeat in range(23):
        leaf = x.detach().requires_grad_(not first)
        start = time.perf_counter()
        y = module(leaf)
        forward = time.perf_counter() - start
        inputs = parameters + ([] if first else [leaf])
        start = time.perf_counter()
        torch.autograd.grad(y, inputs, grad_outputs=torch.ones_like(y))
        backward = time.perf_counter() - start
        if repeat >= 3:
            forwards.append(forward)
            backwards.append(backward)
    return median(forwards), median(backwards)


def main():
    batches = [int(b) for b in sys.argv[1:]] or [64, 256]
    peak, bandwidth = ceilings()
    print(f"torch {torch.__version__}, 2 threads: f32 matmul peak {peak / 1e9:.1f} GFLOP/s, stream copy {bandwidth / 1e9:.1f} GB/s")
    for batch in batches:
        for channels_last in (True, False):
            layout = "channels-last" if channels_last else "NCHW"
            print(f"\nbatch {batch}, {layout}")
            print(f"{'layer':<20} {'fwd ms':>8} {'bwd ms':>8} {'GFLOP/s':>8} {'of peak':>8} {'x floor':>8}")
            total_time = total_floor = total_flops = 0.0
            for index, (name, module, shape, f_fwd, f_bwd, b_fwd, b_bwd) in enumerate(layers(batch)):
                forward, backward = time_layer(module, shape, channels_last, first=index == 0)
                seconds = forward + backward
                flops = f_fwd + f_bwd
                floor = max(f_fwd / peak, b_fwd / bandwidth) + max(f_bwd / peak, b_bwd / bandwidth)
                total_time += seconds
                total_floor += floor
                total_flops += flops
                print(
                    f"{name:<20} {forward * 1e3:8.3f} {backward * 1e3:8.3f} {flops / seconds / 1e9:8.1f}"
                    f" {100 * flops / seconds / peak:7.0f}% {seconds / floor:8.1f}"
                )
            print(
                f"{'all layers':<20} {total_time * 1e3:17.3f} {total_flops / total_time / 1e9:8.1f}"
                f" {100 * total_flops / total_time / peak:7.0f}% {total_time / total_floor:8.1f}"
            )


if __name__ == "__main__":
    main()
