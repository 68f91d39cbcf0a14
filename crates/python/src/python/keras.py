"""parallax's `keras` and `keras-torch` backends: a resolved spec as a functional `keras.Model`,
trained with `model.fit`, on the backend that `KERAS_BACKEND` names (`tensorflow` or `torch`).

Keras's backend is fixed when Keras is first imported, so each backend runs in a process of its
own. Images cross as NCHW, as everywhere in parallax, and become NHWC here, Keras's default
layout; canonical weights are converted on the way in and out (dense kernels transposed,
convolution kernels OIHW to HWIO, the rows of a dense kernel fed by a flattened image permuted
from C,H,W order to Keras's H,W,C). Metrics, checks and records stay in Rust.
"""

import os
import queue
import threading
import time
import weakref


def _import_keras(backend):
    """Keras on `backend`, which must be the one this process imports it with."""
    os.environ.setdefault("KERAS_BACKEND", backend)
    import keras

    if keras.backend.backend() != backend:
        raise NotSupported(
            f"Keras on {backend} in a process whose Keras already runs on {keras.backend.backend()} (Keras fixes its backend when first imported)"
        )
    return keras


class Unexpressible(Exception):
    """A spec layer that Keras's public layers cannot express exactly."""

    def __init__(self, layer, what):
        super().__init__(f"layer {layer!r} needs {what}, which Keras's layers cannot express")


class NotSupported(Exception):
    """Something parallax asks for that Keras's public API does not offer."""


keras = None
np = None


def _same_padding(size, kernel, stride):
    """TensorFlow's SAME padding (before, after) for one dimension."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _padding_mode(layer, size):
    """'valid' when the spec pads nothing, 'same' when its padding is Keras's SAME, else None."""
    top, bottom, left, right = layer["padding"]
    if top == bottom == left == right == 0:
        return "valid"
    height, width = size
    same = _same_padding(height, layer["kernel"][0], layer["stride"][0]) + _same_padding(
        width, layer["kernel"][1], layer["stride"][1]
    )
    if (top, bottom, left, right) == same:
        return "same"
    return None


def _image(x, layer):
    """`x` as an NHWC image: a flat `[N, F]` becomes `[N, 1, 1, F]`."""
    if len(x.shape) == 4:
        return x
    return keras.layers.Reshape((1, 1, x.shape[-1]), name=f"{layer}_as_image")(x)


class Builder:
    """Builds the functional graph layer by layer, recording each canonical tensor's variable
    and how its values convert between the canonical layout and Keras's."""

    def __init__(self):
        # name -> (variable, to_keras, to_canonical)
        self.registry = {}
        self.names = 0
        # Batch norms whose spec asks for the unbiased running variance.
        self.unbiased = []

    def unique(self, base):
        self.names += 1
        return f"{base.replace('.', '_')}_{self.names}"

    def record(self, name, variable, to_keras=None, to_canonical=None):
        same = lambda value: value  # noqa: E731
        self.registry[name] = (variable, to_keras or same, to_canonical or same)

    def conv(self, x, op, layer):
        x = _image(x, layer)
        mode = _padding_mode(op, x.shape[1:3])
        if mode is None:
            top, bottom, left, right = op["padding"]
            x = keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name=self.unique(layer + "_pad"))(x)
            mode = "valid"
        conv = keras.layers.Conv2D(
            op["out_channels"],
            tuple(op["kernel"]),
            strides=tuple(op["stride"]),
            padding=mode,
            use_bias=op["bias"] is not None,
            name=self.unique(op["weight"]),
        )
        y = conv(x)
        # OIHW <-> HWIO.
        self.record(op["weight"], conv.kernel, lambda w: w.transpose(2, 3, 1, 0), lambda w: w.transpose(3, 2, 0, 1))
        if op["bias"] is not None:
            self.record(op["bias"], conv.bias)
        return y

    def norm(self, x, op, flattened):
        if op["running_variance"] != "biased":
            # Evaluation is the same either way; training refuses (Model._compile).
            self.unbiased.append(op["name"])
        norm = keras.layers.BatchNormalization(
            axis=-1, momentum=1.0 - op["momentum"], epsilon=op["epsilon"], name=self.unique(op["tensors"][0])
        )
        y = norm(x)
        to_keras, to_canonical = _feature_order(flattened)
        for name, variable in zip(op["tensors"], [norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance]):
            self.record(name, variable, to_keras, to_canonical)
        return y

    def layer(self, x, layer):
        kind = layer["kind"]
        name = layer["name"]
        if kind == "dense":
            if len(x.shape) == 4:
                x = keras.layers.Flatten(name=self.unique(name + "_flatten"))(x)
            dense = keras.layers.Dense(layer["out_features"], use_bias=layer["bias"] is not None, name=self.unique(layer["weight"]))
            y = dense(x)
            rows_to_keras, rows_to_canonical = _feature_order(layer["flattened_image"])
            self.record(
                layer["weight"],
                dense.kernel,
                lambda w: rows_to_keras(w.T),
                lambda k: rows_to_canonical(k).T,
            )
            if layer["bias"] is not None:
                self.record(layer["bias"], dense.bias)
            return y
        if kind == "conv2d":
            return self.conv(x, layer, name)
        if kind == "batch_norm":
            # Over an image, the norm's vectors are per channel, the same in NHWC.
            return self.norm(x, layer, None if layer["image"] else layer["flattened_image"])
        if kind in ("max_pool2d", "avg_pool2d"):
            x = _image(x, name)
            mode = _padding_mode(layer, x.shape[1:3])
            top, bottom, left, right = layer["padding"]
            if (
                mode is None
                and kind == "max_pool2d"
                and getattr(x, "_parallax_nonnegative", False)
                and max(top, bottom) < layer["kernel"][0]
                and max(left, right) < layer["kernel"][1]
            ):
                # Zeros are exact −∞ padding on a non-negative input whose every window holds a
                # real cell: keras.applications.ResNet50's own ZeroPadding2D + MaxPooling2D.
                x = keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name=self.unique(name + "_pad"))(x)
                x._parallax_nonnegative = True
                mode = "valid"
            if mode is None:
                what = (
                    "max pooling with explicit padding (−∞ cells; ZeroPadding2D pads zeros)"
                    if kind == "max_pool2d"
                    else "average pooling with padding other than SAME (padded cells excluded)"
                )
                raise Unexpressible(name, what)
            pool = keras.layers.MaxPooling2D if kind == "max_pool2d" else keras.layers.AveragePooling2D
            y = pool(tuple(layer["kernel"]), strides=tuple(layer["stride"]), padding=mode, name=self.unique(name))(x)
            # Pooling a non-negative input keeps it non-negative.
            return _nonnegative(y) if getattr(x, "_parallax_nonnegative", False) else y
        if kind == "global_avg_pool":
            return keras.layers.GlobalAveragePooling2D(name=self.unique(name))(_image(x, name))
        if kind == "relu":
            return _nonnegative(keras.layers.ReLU(name=self.unique(name))(x))
        if kind == "dropout":
            return keras.layers.Dropout(layer["rate"], name=self.unique(name))(x)
        if kind == "flatten":
            return keras.layers.Flatten(name=self.unique(name))(x) if len(x.shape) == 4 else x
        if kind == "block":
            x = _image(x, name)
            y = x
            last = len(layer["main"]) - 1
            for index, step in enumerate(layer["main"]):
                y = self.norm(self.conv(y, step["conv"], name), step["norm"], None)
                if index < last:
                    y = keras.layers.ReLU(name=self.unique(name + "_relu"))(y)
            shortcut = x
            if layer["shortcut"] is not None:
                step = layer["shortcut"]
                shortcut = self.norm(self.conv(x, step["conv"], name), step["norm"], None)
            return _nonnegative(
                keras.layers.ReLU(name=self.unique(name + "_out"))(keras.layers.Add(name=self.unique(name + "_add"))([y, shortcut]))
            )
        raise Unexpressible(name, f"a layer of kind {kind!r}, which this module does not know")


def _nonnegative(tensor):
    """Marks a symbolic tensor as known non-negative (a ReLU's output), which makes zero
    padding exact for a max pooling after it."""
    tensor._parallax_nonnegative = True
    return tensor


def _feature_order(flattened_image):
    """How a vector of features fed by a flattened `[C, H, W]` image converts: canonical order is
    C,H,W, Keras flattens NHWC as H,W,C. Identity when the features are not a flattened image."""
    if flattened_image is None:
        same = lambda value: value  # noqa: E731
        return same, same
    c, h, w = flattened_image
    # keras_index[k] = canonical index of Keras's k-th feature.
    keras_index = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    canonical_index = np.argsort(keras_index)
    return (lambda value: value[keras_index]), (lambda value: value[canonical_index])


def _optimizer(config):
    if config["kind"] == "sgd":
        return keras.optimizers.SGD(learning_rate=config["lr"], momentum=config["momentum"])
    if config["formulation"] != "keras":
        raise NotSupported("Adam in PyTorch's formulation (keras.optimizers.Adam adds ε to the uncorrected root)")
    return keras.optimizers.Adam(
        learning_rate=config["lr"], beta_1=config["beta1"], beta_2=config["beta2"], epsilon=config["epsilon"]
    )


def _nhwc(images):
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


class _FitThread:
    """The one thread that runs every `fit` of a model, for the model's life.

    `fit` runs beside the caller so that the caller reads each step's loss while it trains.
    It must be the same thread from epoch to epoch: Keras keeps its global state in a
    thread-local object, and on the torch backend TorchDynamo guards the compiled train step
    on that object's attributes, so a fresh thread fails the guards and compiles the step
    again. With a thread per epoch, keras-torch's second compiled epoch took 4× its
    uncompiled one (`benches/profiles/keras_torch_compile.py` reproduces it).
    """

    def __init__(self, owner):
        self.jobs = queue.Queue()
        # A daemon thread, so that a worker that exits does not wait on it; it holds the queue
        # only, and ends when its model is collected: a process that builds many models (the
        # conformance suite) keeps no idle thread per model.
        threading.Thread(target=_FitThread._run, args=(self.jobs,), name="keras-fit", daemon=True).start()
        weakref.finalize(owner, self.jobs.put, None)

    @staticmethod
    def _run(jobs):
        while (job := jobs.get()) is not None:
            job()

    def submit(self, job):
        self.jobs.put(job)


class Model:
    """A spec's functional model, compiled with the run's optimizer when training starts."""

    def __init__(self, layers, input_shape, precision="f32", compile=False):
        c, h, w = input_shape
        # bf16 as a Keras user gets it: the mixed_bfloat16 policy, bf16 compute with float32
        # variables. Layers take the global policy when they are made, so it is set around the
        # building alone.
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bf16" else "float32")
        try:
            inputs = keras.Input(shape=(h, w, c), name="images")
            builder = Builder()
            x = inputs
            outputs = []
            self.first_weighted = None
            for index, layer in enumerate(layers):
                before = len(builder.registry)
                x = builder.layer(x, layer)
                outputs.append(x)
                if self.first_weighted is None and len(builder.registry) > before:
                    self.first_weighted = index
            logits = keras.layers.Flatten(name="logits")(x) if len(x.shape) > 2 else x
            if precision == "bf16":
                # Keras's mixed-precision guide: the model's output in float32, so that the loss
                # and the metrics are f32.
                logits = keras.layers.Activation("linear", dtype="float32", name="logits_f32")(logits)
        finally:
            keras.config.set_dtype_policy(policy)
        self.model = keras.Model(inputs, logits)
        # True: XLA (TensorFlow) or torch.compile (torch); "auto" is Keras's default, which
        # resolves to False on the CPU.
        self.jit_compile_asked = True if compile else "auto"
        self.inputs = inputs
        self.layer_outputs = outputs
        self.logits = logits
        self.registry = builder.registry
        self.unbiased = builder.unbiased
        self.config = None
        self.jit_compile = None
        self.fit_thread = None

    def _compile(self, config):
        if self.unbiased:
            raise NotSupported(
                f"training batch norm {self.unbiased[0]!r} with the unbiased running variance: Keras's BatchNormalization updates it with the biased batch variance, and no public argument changes that"
            )
        if self.config != config:
            self.model.compile(
                optimizer=_optimizer(config),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=self.jit_compile_asked,
            )
            self.jit_compile = bool(self.model.jit_compile)
            self.config = dict(config)

    def import_weights(self, weights):
        for name, (variable, to_keras, _) in self.registry.items():
            variable.assign(to_keras(weights[name]).astype("float32"))
        # The optimizer's state belonged to the old weights.
        self.config = None

    def export_weights(self):
        return {
            name: np.ascontiguousarray(to_canonical(keras.ops.convert_to_numpy(variable.value)), dtype=np.float32)
            for name, (variable, _, to_canonical) in self.registry.items()
        }

    def train_step(self, images, labels, config):
        self._compile(config)
        return float(self.model.train_on_batch(_nhwc(images), labels))

    def layer_times(self, images, repeats):
        """Each spec layer timed on its own: its Keras layers as a functional model of their own
        between the spec layer's input and output (sharing the model's variables), called
        eagerly, which the CPU runs synchronously. The forward pass in training mode; the
        backward pass from a gradient of ones to the layer's variables and, where a layer
        before it has variables, its input (GradientTape on TensorFlow, autograd on torch); each
        pass `repeats` times after a warm-up, the medians as (forward, backward) seconds. A
        layer's input is what the layers before it compute in evaluation mode. Eager calls, not
        `fit`'s compiled train function: a layer alone, as every engine's layers are timed."""
        on_torch = keras.backend.backend() == "torch"
        if on_torch:
            import torch

            x = torch.from_numpy(_nhwc(images))
        else:
            import tensorflow as tf

            x = tf.constant(_nhwc(images))
        upstream = False
        times = []
        previous = self.inputs
        for output in self.layer_outputs:
            # A flatten of what is already flat adds no Keras layer: nothing runs.
            layer = (lambda value, training: value) if output is previous else keras.Model(previous, output)
            variables = [] if output is previous else layer.trainable_variables
            forwards, backwards = [], []
            for repeat in range(repeats + 1):
                backward = 0.0
                if on_torch:
                    leaf = x.detach().requires_grad_(upstream)
                    start = time.perf_counter()
                    y = layer(leaf, training=True)
                    forward = time.perf_counter() - start
                    inputs = [variable.value for variable in variables] + ([leaf] if upstream else [])
                    if inputs and y.requires_grad:
                        start = time.perf_counter()
                        torch.autograd.grad(y, inputs, grad_outputs=torch.ones_like(y), allow_unused=True)
                        backward = time.perf_counter() - start
                else:
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        start = time.perf_counter()
                        y = layer(x, training=True)
                        forward = time.perf_counter() - start
                    inputs = list(variables) + ([x] if upstream else [])
                    if inputs:
                        start = time.perf_counter()
                        tape.gradient(y, inputs, output_gradients=tf.ones_like(y))
                        backward = time.perf_counter() - start
                # The first repeat warms up: allocations, and oneDNN's primitives.
                if repeat:
                    forwards.append(forward)
                    backwards.append(backward)
            times.append((float(np.median(forwards)), float(np.median(backwards))))
            if on_torch:
                with torch.no_grad():
                    x = layer(x, training=False)
            else:
                x = layer(x, training=False)
            upstream = upstream or bool(variables)
            previous = output
        return times

    def traced_step(self, images, labels, config):
        """One train_step, and whether it ran compiled: what `compile`'s jit_compile resolved
        to (Keras turns it off for a model XLA cannot take) and, on torch, whether TorchDynamo
        captured graphs for it, as it does on a model's first step."""
        if keras.backend.backend() != "torch":
            loss = self.train_step(images, labels, config)
            return loss, bool(self.jit_compile)
        from torch._dynamo.utils import counters

        before = counters["stats"]["unique_graphs"]
        loss = self.train_step(images, labels, config)
        return loss, bool(self.jit_compile) and counters["stats"]["unique_graphs"] > before

    def train_epoch(self, images, labels, order, batch_size, config):
        """The epoch as `model.fit` runs it, on the data in the plan's order (gathered before the
        clock starts), in the model's fit thread (the same for every epoch, see `_FitThread`);
        returns an iterator over each step's loss and batch size, as Keras's loss tracker
        reports it when each batch ends."""
        self._compile(config)
        x = _nhwc(images)[order]
        y = labels[order]
        steps = queue.Queue()
        count = len(order)

        class Progress(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seen = 0

            def on_train_batch_begin(self, batch, logs=None):
                # Keras's loss tracker is a running mean over the epoch, summed in float32:
                # recovering one step's loss from it would carry that sum's rounding, up to a
                # step count of ulps. Reset (public Metric API), it reports this batch alone;
                # training does not read it.
                for metric in self.model.metrics:
                    metric.reset_state()

            def on_train_batch_end(self, batch, logs=None):
                n = min(batch_size, count - self.seen)
                steps.put((float(logs["loss"]), n))
                self.seen += n

        def fit():
            try:
                self.model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[Progress()])
                steps.put(None)
            except BaseException as error:  # handed to the caller's thread
                steps.put(error)

        if self.fit_thread is None:
            self.fit_thread = _FitThread(self)
        self.fit_thread.submit(fit)

        def results():
            # `fit` puts its last item as its last act, so the thread is free for the next
            # epoch once the caller has read it.
            while True:
                item = steps.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        return results()

    def layer_profile(self, images, labels, config, steps):
        """None: `fit`'s train function runs the step as one call (one graph on TensorFlow),
        and no profiler this module reads ties its operations back to the spec's layers."""
        return None

    def profile_step(self, images, labels, config):
        raise NotSupported("timing a training step's phases apart (Keras runs train_on_batch as one step)")

    def predict(self, images):
        logits = self.model(_nhwc(images), training=False)
        return np.ascontiguousarray(keras.ops.convert_to_numpy(logits), dtype=np.float32)

    def activation_dtype(self, images):
        """The dtype of the first layer with weights' output, as Keras states it on the symbolic
        tensor and as the engine computes it on `images`, in inference mode."""
        probe = keras.Model(self.inputs, self.layer_outputs[self.first_weighted])
        output = probe(_nhwc(images), training=False)
        computed = keras.backend.standardize_dtype(output.dtype)
        stated = keras.backend.standardize_dtype(self.layer_outputs[self.first_weighted].dtype)
        if computed != stated:
            raise NotSupported(f"the first hidden layer states {stated} but computed {computed}")
        return computed

    def grad_cam(self, images, layer, classes):
        """The layer's output and the gradient of each image's class logit with respect to it,
        from a model that outputs both (GradientTape on TensorFlow, autograd on torch)."""
        probe = keras.Model(self.inputs, [self.layer_outputs[layer], self.logits])
        x = _nhwc(images)
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                activations, logits = probe(x, training=False)
                tape.watch(activations)
                score = tf.reduce_sum(tf.gather(logits, classes, axis=1, batch_dims=1))
            gradients = tape.gradient(score, activations)
            activations, gradients = activations.numpy(), gradients.numpy()
        else:
            import torch

            activations, logits = probe(torch.from_numpy(x), training=False)
            activations.retain_grad()
            score = logits.gather(1, torch.from_numpy(classes).long().unsqueeze(1)).sum()
            score.backward()
            activations, gradients = activations.detach().float().cpu().numpy(), activations.grad.float().cpu().numpy()
        if activations.ndim == 4:
            activations, gradients = activations.transpose(0, 3, 1, 2), gradients.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(activations, dtype=np.float32), np.ascontiguousarray(gradients, dtype=np.float32)


class Matmul:
    """Two matrices multiplied by keras.ops.matmul on the backend's engine."""

    def __init__(self, left, right, precision="f32"):
        dtype = "bfloat16" if precision == "bf16" else "float32"
        self.left = keras.ops.convert_to_tensor(left.copy(), dtype=dtype)
        self.right = keras.ops.convert_to_tensor(right.copy(), dtype=dtype)

    def multiply(self):
        product = keras.ops.matmul(self.left, self.right)
        return float(np.asarray(keras.ops.convert_to_numpy(product), dtype=np.float64).sum())


class Framework:
    """Keras on `backend`, its engine set to the run's threads before it computes anything."""

    def __init__(self, threads, flush_denormals, backend):
        global keras, np
        self.backend = backend
        keras = _import_keras(backend)
        import numpy

        np = numpy
        if backend == "tensorflow":
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:
                # Allowed only before TensorFlow's runtime starts; a second backend in the same
                # process keeps the first one's pools.
                pass
            self.engine_version = tf.__version__
            self.threads = tf.config.threading.get_intra_op_parallelism_threads()
            self.interop_threads = tf.config.threading.get_inter_op_parallelism_threads()
            # TensorFlow's CPU threads always flush subnormals (its own ScopedFlushDenormal).
            self.flush_denormals = True
        else:
            import torch

            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(threads)
            except RuntimeError:
                pass
            torch.set_flush_denormal(flush_denormals)
            self.engine_version = torch.__version__.split("+")[0]
            self.threads = torch.get_num_threads()
            self.interop_threads = torch.get_num_interop_threads()
            small = torch.full((1 << 20,), 1e-20)
            self.flush_denormals = not bool((small * small).ne(0).any())

    def info(self):
        adam = keras.optimizers.Adam()
        norm = keras.layers.BatchNormalization()
        # What compile's jit_compile="auto" (Keras's default, which parallax keeps) resolves to
        # on this machine and backend, read from a compiled model as every run's is.
        probe = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        probe.compile(optimizer="sgd", loss="mse", jit_compile="auto")
        return {
            "jit_compile": bool(probe.jit_compile),
            "framework_version": keras.__version__,
            "engine_version": self.engine_version,
            "threads": self.threads,
            "interop_threads": self.interop_threads,
            "flush_denormals": self.flush_denormals,
            "adam_epsilon": float(adam.epsilon),
            "adam_foreach": "n/a",
            # Keras's momentum weighs the old running value; parallax's, the new batch.
            "batch_norm_momentum": 1.0 - float(norm.momentum),
            "keras_batch_norm_momentum": float(norm.momentum),
            "batch_norm_epsilon": float(norm.epsilon),
        }

    def seed(self, seed):
        keras.utils.set_random_seed(seed % (2**32))

    def create(self, layers, weights, input_shape, precision="f32", compile=False):
        model = Model(layers, input_shape, precision, compile)
        if weights is not None:
            model.import_weights(weights)
        return model

    def matmul_probe(self, left, right, precision="f32"):
        return Matmul(left, right, precision)
