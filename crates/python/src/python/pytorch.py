"""parallax's `pytorch` backend: a resolved spec as a PyTorch `nn.Module`, trained in the eager
loop a PyTorch user writes (`zero_grad`, `backward`, `torch.optim` `step`).

The Rust side (crates/python) hands every layer as a plain dict, canonical weights as numpy
arrays named as in a PyTorch state dict, and the epoch's order; it reads back losses, logits,
weights and GradCAM's tensors. Metrics, checks and records stay in Rust: nothing here computes
an accuracy.
"""

import os
import time
import warnings

# torch.profiler's Kineto logs an error line per profiler on a machine without a GPU (it asks
# for the GPUs' count); the line says nothing about the run, and a worker's stderr is the
# user's terminal. Read when Kineto starts, so before the first profiler; a user's own level
# stays.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _padding_arg(padding):
    """PyTorch's own `padding=` for symmetric [top, bottom, left, right], or None."""
    top, bottom, left, right = padding
    return (top, left) if top == bottom and left == right else None


class ExplicitPad(nn.Module):
    """An explicit pad before a layer whose own padding is symmetric only (F.pad, last dim first)."""

    def __init__(self, padding, value):
        super().__init__()
        top, bottom, left, right = padding
        self.pad = (left, right, top, bottom)
        self.value = value

    def forward(self, x):
        return F.pad(x, self.pad, value=self.value)


class Image(nn.Module):
    """`[N, F]` as `[N, F, 1, 1]`, so that image layers after a dense one see an image."""

    def forward(self, x):
        return x if x.dim() == 4 else x.reshape(x.shape[0], -1, 1, 1)


class Flat(nn.Module):
    """`[N, C, H, W]` as `[N, C·H·W]`; a flat input passes unchanged."""

    def forward(self, x):
        return x if x.dim() == 2 else x.reshape(x.shape[0], -1)


class AvgPoolExcludingPadding(nn.Module):
    """Average pooling with asymmetric padding, padded cells excluded from each mean: the mean
    of the zero-padded input, divided by the share of each window inside the image."""

    def __init__(self, kernel, stride, padding):
        super().__init__()
        self.pad = ExplicitPad(padding, 0.0)
        self.pool = nn.AvgPool2d(kernel, stride, count_include_pad=True)

    def forward(self, x):
        ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        return self.pool(self.pad(x)) / self.pool(self.pad(ones))


def conv2d(op, registry):
    """nn.Conv2d for a conv op, padded explicitly first when its padding is asymmetric."""
    symmetric = _padding_arg(op["padding"])
    conv = nn.Conv2d(
        op["in_channels"],
        op["out_channels"],
        tuple(op["kernel"]),
        stride=tuple(op["stride"]),
        padding=symmetric if symmetric is not None else 0,
        bias=op["bias"] is not None,
    )
    registry[op["weight"]] = conv.weight
    if op["bias"] is not None:
        registry[op["bias"]] = conv.bias
    if symmetric is None:
        return nn.Sequential(ExplicitPad(op["padding"], 0.0), conv)
    return conv


def batch_norm(op, registry, image):
    """nn.BatchNorm2d (or 1d on features) with the spec's momentum and ε."""
    if op["running_variance"] != "unbiased":
        raise Unexpressible(
            op["name"],
            "a biased running variance: nn.BatchNorm updates it with the unbiased batch variance, and no public argument changes that",
        )
    kind = nn.BatchNorm2d if image else nn.BatchNorm1d
    norm = kind(op["features"], eps=op["epsilon"], momentum=op["momentum"])
    names = op["tensors"]
    registry[names[0]] = norm.weight
    registry[names[1]] = norm.bias
    registry[names[2]] = norm.running_mean
    registry[names[3]] = norm.running_var
    return norm


class Unexpressible(Exception):
    """A spec layer that PyTorch's public layers cannot express exactly."""

    def __init__(self, layer, what):
        super().__init__(f"layer {layer!r} needs {what}")


class Block(nn.Module):
    """A residual block as torchvision writes one: conv-bn pairs with ReLUs between, the
    projection shortcut when the shape changes, ReLU after the sum."""

    def __init__(self, op, registry):
        super().__init__()
        self.main = nn.ModuleList()
        for step in op["main"]:
            self.main.append(nn.Sequential(conv2d(step["conv"], registry), batch_norm(step["norm"], registry, True)))
        self.shortcut = None
        if op["shortcut"] is not None:
            step = op["shortcut"]
            self.shortcut = nn.Sequential(conv2d(step["conv"], registry), batch_norm(step["norm"], registry, True))

    def forward(self, x):
        y = x
        last = len(self.main) - 1
        for index, step in enumerate(self.main):
            y = step(y)
            if index < last:
                y = F.relu(y)
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


def layer_module(layer, registry):
    """One spec layer as a module; its canonical tensors go into `registry` by name."""
    kind = layer["kind"]
    if kind == "dense":
        linear = nn.Linear(layer["in_features"], layer["out_features"], bias=layer["bias"] is not None)
        registry[layer["weight"]] = linear.weight
        if layer["bias"] is not None:
            registry[layer["bias"]] = linear.bias
        return nn.Sequential(Flat(), linear)
    if kind == "conv2d":
        return nn.Sequential(Image(), conv2d(layer, registry))
    if kind == "batch_norm":
        return batch_norm(layer, registry, layer["image"])
    if kind == "max_pool2d":
        symmetric = _padding_arg(layer["padding"])
        kernel = tuple(layer["kernel"])
        if symmetric is not None and 2 * symmetric[0] <= kernel[0] and 2 * symmetric[1] <= kernel[1]:
            return nn.Sequential(Image(), nn.MaxPool2d(kernel, tuple(layer["stride"]), padding=symmetric))
        return nn.Sequential(Image(), ExplicitPad(layer["padding"], float("-inf")), nn.MaxPool2d(kernel, tuple(layer["stride"])))
    if kind == "avg_pool2d":
        symmetric = _padding_arg(layer["padding"])
        kernel = tuple(layer["kernel"])
        if symmetric is not None and 2 * symmetric[0] <= kernel[0] and 2 * symmetric[1] <= kernel[1]:
            return nn.Sequential(
                Image(), nn.AvgPool2d(kernel, tuple(layer["stride"]), padding=symmetric, count_include_pad=False)
            )
        return nn.Sequential(Image(), AvgPoolExcludingPadding(kernel, tuple(layer["stride"]), layer["padding"]))
    if kind == "global_avg_pool":
        return nn.Sequential(Image(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if kind == "relu":
        return nn.ReLU()
    if kind == "dropout":
        return nn.Dropout(layer["rate"])
    if kind == "flatten":
        return Flat()
    if kind == "block":
        return nn.Sequential(Image(), Block(layer, registry))
    raise Unexpressible(layer["name"], f"a layer of kind {kind!r}, which this module does not know")


class Network(nn.Module):
    """The spec's layers in order; the output is flattened to `[N, classes]`."""

    def __init__(self, layers):
        super().__init__()
        self.registry = {}
        self.layers = nn.ModuleList(layer_module(layer, self.registry) for layer in layers)

    def forward(self, x, marks=None):
        """The logits; with `marks` (one name per layer), each layer runs inside a profiler
        range of that name (`Model.layer_profile`)."""
        for index, layer in enumerate(self.layers):
            if marks is None:
                x = layer(x)
            else:
                with torch.profiler.record_function(marks[index]):
                    x = layer(x)
        return x.reshape(x.shape[0], -1)


def optimizer_for(parameters, config):
    """torch.optim's own optimizer for parallax's optimizer config."""
    if config["kind"] == "sgd":
        return torch.optim.SGD(parameters, lr=config["lr"], momentum=config["momentum"], dampening=0.0)
    if config["formulation"] != "pytorch":
        raise NotSupported("Adam in Keras's formulation (torch.optim.Adam adds ε to the bias-corrected root only)")
    return torch.optim.Adam(
        parameters, lr=config["lr"], betas=(config["beta1"], config["beta2"]), eps=config["epsilon"]
    )


class NotSupported(Exception):
    """Something parallax asks for that PyTorch's public API does not offer."""


def _layer_seconds(events, marks):
    """Each marked range's forward seconds, and the seconds of the autograd functions that its
    operations created (an operation that records an autograd node records its sequence number,
    and the engine's `evaluate_function` event for that node carries the same number)."""
    index = {mark: position for position, mark in enumerate(marks)}
    forward = [0.0] * len(marks)
    backward = [0.0] * len(marks)
    owner = {}
    for event in events:
        position = index.get(event.name)
        if position is None:
            continue
        forward[position] += event.cpu_time_total
        below = list(event.cpu_children)
        while below:
            child = below.pop()
            if child.sequence_nr >= 0:
                owner[child.sequence_nr] = position
            below.extend(child.cpu_children)
    for event in events:
        if event.name.startswith("autograd::engine::evaluate_function:") and event.sequence_nr in owner:
            backward[owner[event.sequence_nr]] += event.cpu_time_total
    # The profiler's times are microseconds.
    return [seconds * 1e-6 for seconds in forward], [seconds * 1e-6 for seconds in backward]


class Model:
    """A spec's network with its optimizer, driven by the Rust side's `Model` hooks."""

    def __init__(self, layers, precision="f32", compile=False):
        self.network = Network(layers)
        # bf16 as a PyTorch user gets it on the CPU: autocast around the forward pass, the
        # parameters (master weights), their gradients and the optimizer staying f32.
        self.bf16 = precision == "bf16"
        # torch.compile wraps the module; it compiles on the first call of each mode (training,
        # evaluation), so the first step carries the compile time. GradCAM's hooks use the
        # module itself.
        self.forward = torch.compile(self.network) if compile else self.network
        self.compiled = compile
        self.optimizer = None
        self.optimizer_config = None

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def _optimizer(self, config):
        if self.optimizer is None or self.optimizer_config != config:
            trainable = [p for p in self.network.registry.values() if isinstance(p, nn.Parameter)]
            self.optimizer = optimizer_for(trainable, config)
            self.optimizer_config = dict(config)
        return self.optimizer

    def import_weights(self, weights):
        with torch.no_grad():
            for name, tensor in self.network.registry.items():
                tensor.copy_(torch.from_numpy(weights[name]))
        # The optimizer's state belonged to the old parameters.
        self.optimizer = None

    def export_weights(self):
        return {name: tensor.detach().cpu().numpy().copy() for name, tensor in self.network.registry.items()}

    def names(self):
        return list(self.network.registry)

    def _step(self, x, y, optimizer, clock=None, forward=None):
        self.network.train()
        optimizer.zero_grad()
        with self._autocast():
            logits = (forward or self.forward)(x)
        # The loss in f32, outside autocast, as PyTorch's mixed-precision recipe computes it.
        loss = F.cross_entropy(logits.float(), y)
        if clock:
            clock("forward")
        loss.backward()
        if clock:
            clock("backward")
        optimizer.step()
        if clock:
            clock("optimizer")
        value = loss.item()
        if clock:
            clock("readback")
        return value

    def train_step(self, images, labels, config):
        optimizer = self._optimizer(config)
        return self._step(torch.from_numpy(images), torch.from_numpy(labels).long(), optimizer)

    def layer_times(self, images, repeats):
        """Each layer's forward pass (training mode) and backward pass (from a gradient of ones,
        to its parameters and, where a layer before it has parameters, its input) timed on its
        own: the network's modules called one at a time, which the CPU runs synchronously, each
        pass `repeats` times after a warm-up; the medians, as (forward, backward) seconds. A
        layer's input is what the layers before it compute in evaluation mode."""
        x = torch.from_numpy(images)
        upstream = False
        times = []
        for layer in self.network.layers:
            parameters = [p for p in layer.parameters() if p.requires_grad]
            forwards, backwards = [], []
            for repeat in range(repeats + 1):
                leaf = x.detach().requires_grad_(upstream)
                layer.train()
                with self._autocast():
                    start = time.perf_counter()
                    y = layer(leaf)
                    forward = time.perf_counter() - start
                backward = 0.0
                inputs = parameters + ([leaf] if upstream else [])
                if inputs:
                    start = time.perf_counter()
                    torch.autograd.grad(y, inputs, grad_outputs=torch.ones_like(y))
                    backward = time.perf_counter() - start
                # The first repeat warms up: allocations, and oneDNN's primitives.
                if repeat:
                    forwards.append(forward)
                    backwards.append(backward)
            times.append((float(np.median(forwards)), float(np.median(backwards))))
            layer.eval()
            with torch.no_grad(), self._autocast():
                x = layer(x)
            upstream = upstream or bool(parameters)
        return times

    def layer_profile(self, images, labels, config, steps):
        """Each layer's time inside whole training steps as torch.profiler attributes it: the
        step as `train_step` runs it, each layer's forward inside a `record_function` range of
        its own; a layer's forward time is its range's, and its backward time the autograd
        engine's functions whose sequence numbers the operations in its range recorded. One
        unprofiled warm-up step, then `steps` profiled ones, each a profiler of its own; the
        medians, as (forward, backward) seconds. None when compiled: Inductor's kernels fuse
        operations across the layers' boundaries."""
        if self.compiled:
            return None
        from torch.profiler import ProfilerActivity, profile

        optimizer = self._optimizer(config)
        x = torch.from_numpy(images)
        y = torch.from_numpy(labels).long()
        marks = [f"parallax.layer.{index}" for index in range(len(self.network.layers))]
        self._step(x, y, optimizer)
        forwards, backwards = [], []
        for _ in range(steps):
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                self._step(x, y, optimizer, forward=lambda h: self.network(h, marks))
            forward, backward = _layer_seconds(profiler.events(), marks)
            forwards.append(forward)
            backwards.append(backward)
        layers = [
            (float(np.median([step[index] for step in forwards])), float(np.median([step[index] for step in backwards])))
            for index in range(len(marks))
        ]
        return "torch.profiler", layers

    def traced_step(self, images, labels, config):
        """One train_step, and whether it ran compiled: on a model's first step, when
        torch.compile compiles, TorchDynamo's count of the graphs it captured grows."""
        from torch._dynamo.utils import counters

        before = counters["stats"]["unique_graphs"]
        loss = self.train_step(images, labels, config)
        return loss, counters["stats"]["unique_graphs"] > before

    def train_epoch(self, images, labels, order, batch_size, config):
        """The epoch as a PyTorch user writes it, one batch after another in the given order;
        yields each step's loss and batch size, so that the Rust side keeps the tally."""
        optimizer = self._optimizer(config)
        with warnings.catch_warnings():
            # The images are core's own buffer, lent read-only; PyTorch warns that its tensor
            # could write to them, and nothing here does (batches are gathered copies).
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            data = torch.from_numpy(images)
        targets = torch.from_numpy(labels).long()
        order = torch.from_numpy(order).long()
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield self._step(data[index], targets[index], optimizer), len(index)

    def profile_step(self, images, labels, config):
        optimizer = self._optimizer(config)
        phases = {}
        since = [time.perf_counter()]

        def clock(phase):
            now = time.perf_counter()
            phases[phase] = phases.get(phase, 0.0) + now - since[0]
            since[0] = now

        x = torch.from_numpy(images)
        y = torch.from_numpy(labels).long()
        clock("input")
        self._step(x, y, optimizer, clock)
        return phases

    def predict(self, images):
        self.network.eval()
        with torch.no_grad(), self._autocast():
            return self.forward(torch.from_numpy(images)).float().numpy().copy()

    def activation_dtype(self, images):
        """The dtype of the first layer with weights' output, in evaluation mode (so nothing,
        batch norm's running statistics included, changes), as torch names it."""
        first = next(layer for layer in self.network.layers if any(True for _ in layer.parameters()))
        kept = {}

        def hook(_module, _inputs, output):
            # A hook that returns something replaces the output: this one returns None.
            kept["dtype"] = output.dtype

        handle = first.register_forward_hook(hook)
        self.network.eval()
        try:
            with torch.no_grad(), self._autocast():
                self.network(torch.from_numpy(images))
        finally:
            handle.remove()
        return str(kept["dtype"]).removeprefix("torch.")

    def grad_cam(self, images, layer, classes):
        """The layer's output and the gradient of each image's class logit with respect to it,
        through a forward hook that keeps the output and asks autograd to retain its gradient."""
        self.network.eval()
        kept = {}

        def hook(_module, _inputs, output):
            output.retain_grad()
            kept["activations"] = output

        handle = self.network.layers[layer].register_forward_hook(hook)
        try:
            x = torch.from_numpy(images)
            with self._autocast():
                logits = self.network(x)
            logits = logits.float()
            score = logits.gather(1, torch.from_numpy(classes).long().unsqueeze(1)).sum()
            self.network.zero_grad(set_to_none=True)
            score.backward()
        finally:
            handle.remove()
        activations = kept["activations"]
        return activations.detach().float().numpy().copy(), activations.grad.float().numpy().copy()


class Matmul:
    """Two matrices multiplied by torch.matmul: the probe behind the machine's peak."""

    def __init__(self, left, right, precision="f32"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.left = torch.from_numpy(left).to(dtype).clone()
        self.right = torch.from_numpy(right).to(dtype).clone()

    def multiply(self):
        with torch.no_grad():
            return torch.matmul(self.left, self.right).sum(dtype=torch.float64).item()


def _flushes_denormals():
    """Whether torch's threads flush subnormals, found by computing, as the tch adapter does."""
    small = torch.full((1 << 20,), 1e-20)
    return not bool((small * small).ne(0).any())


class Framework:
    """PyTorch set to the run's threads and subnormal policy before it computes anything."""

    def __init__(self, threads, flush_denormals):
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            # Allowed once per process, before any inter-op work; a second backend in the same
            # process (a test binary) keeps the first one's pool.
            pass
        torch.set_flush_denormal(flush_denormals)

    def info(self):
        probe = torch.optim.Adam([nn.Parameter(torch.zeros(1))])
        norm = nn.BatchNorm2d(1)
        return {
            # PyTorch's eager loop compiles nothing (no torch.compile), so there is nothing to read.
            "jit_compile": None,
            "framework_version": torch.__version__.split("+")[0],
            "engine_version": torch.__version__.split("+")[0],
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "flush_denormals": _flushes_denormals(),
            "adam_epsilon": probe.defaults["eps"],
            "adam_foreach": probe.defaults["foreach"],
            "batch_norm_momentum": norm.momentum,
            "batch_norm_epsilon": norm.eps,
            "cuda_available": torch.cuda.is_available(),
            "cuda_devices": torch.cuda.device_count(),
        }

    def seed(self, seed):
        torch.manual_seed(seed)

    def create(self, layers, weights, input_shape, precision="f32", compile=False):
        # PyTorch infers every size from the layers; the input shape matters to Keras only.
        del input_shape
        model = Model(layers, precision, compile)
        if weights is not None:
            model.import_weights(weights)
        return model

    def matmul_probe(self, left, right, precision="f32"):
        return Matmul(left, right, precision)
