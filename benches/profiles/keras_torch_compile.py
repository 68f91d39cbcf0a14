"""Why keras-torch's compiled epochs were slower than its uncompiled ones: full reproduction.

The cnn preset's layers in Keras's functional API on the torch backend, `jit_compile=True`
(torch.compile), Adam lr 1e-3 ε 1e-8, batch 64, the first 6,400 Fashion-MNIST training examples,
2 threads, `model.fit` once per epoch with parallax's per-batch callback (metrics reset, the
loss read), three epochs, each run one of these ways:
  caller      fit on the calling thread, as a plain Keras script runs it;
  new-thread  fit in a fresh thread per epoch: what parallax's keras.py did;
  one-thread  fit in one thread kept for every epoch: what keras.py does now.
Keras keeps its global state in a thread-local object and TorchDynamo guards the compiled
train step on its attributes, so a fresh thread fails the guards and recompiles: the second
epoch of `new-thread` carries a compile again. Prints each epoch's seconds and Dynamo's
recompile count. `jit_compile=False` (uncompiled) with `COMPILE=off`.

Run with the frameworks' environment's Python (`cargo xtask setup`):
  $PARALLAX_FRAMEWORKS_VENV/bin/python benches/profiles/keras_torch_compile.py [WAY ...]
docs/bench.md quotes its output.
"""
import gzip, os, queue, sys, threading, time
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np
import torch
torch.set_num_threads(2)
import keras
from torch._dynamo.utils import counters

def idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)

root = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")  # its four .gz IDX files
x = (idx(f"{root}/train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)[:6400]
y = idx(f"{root}/train-labels-idx1-ubyte.gz", 8).astype(np.int64)[:6400]
compiled = os.environ.get("COMPILE", "on") == "on"

class Progress(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        for metric in self.model.metrics:
            metric.reset_state()
    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])

def model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(128, activation="relu")(h)
    m = keras.Model(inputs, keras.layers.Dense(10)(h))
    m.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=compiled)
    return m

def run(way):
    m = model()
    fit = lambda: m.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0, callbacks=[Progress()])
    jobs = queue.Queue()
    if way == "one-thread":
        def loop():
            while True:
                job, done = jobs.get()
                job()
                done.set()
        threading.Thread(target=loop, daemon=True).start()
    for epoch in range(1, 4):
        before = counters["stats"]["unique_graphs"]
        start = time.perf_counter()
        if way == "caller":
            fit()
        elif way == "new-thread":
            thread = threading.Thread(target=fit)
            thread.start()
            thread.join()
        else:
            done = threading.Event()
            jobs.put((fit, done))
            done.wait()
        seconds = time.perf_counter() - start
        graphs = counters["stats"]["unique_graphs"] - before
        print(f"{way:<10} compile={'on' if compiled else 'off'} epoch {epoch}: {seconds:6.2f} s, {graphs} graphs compiled", flush=True)

for way in sys.argv[1:] or ["new-thread", "one-thread"]:
    run(way)
