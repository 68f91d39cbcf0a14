"""Where a Keras (TensorFlow backend) cnn epoch's time goes: full Fashion-MNIST, 2 threads.

The cnn preset's layers in Keras's functional API (the layers parallax's keras.py builds), Adam
lr 1e-3 ε 1e-8, batch 64, 938 steps, one warm-up epoch, then each way of running an epoch once
per round, in alternating order:
  fit           model.fit(verbose=0) on the arrays, no callbacks: what a Keras user runs;
  fit+parallax  model.fit with parallax's per-batch callback (metrics reset, the loss read):
                what `cargo xtask compare` times for `keras`;
  fit+loss      model.fit with a callback that only reads each step's loss;
  fit(dataset)  model.fit on a batched tf.data.Dataset of the arrays;
  function      Keras's compiled train_function called in a plain loop on a tf.data iterator:
                the step's graph without fit's machinery.
Then cProfile of one fit+parallax epoch, the top entries by own time.

Run with the frameworks' environment's Python (`cargo xtask setup`):
  $PARALLAX_FRAMEWORKS_VENV/bin/python benches/profiles/keras_fit_epoch.py [ROUNDS]
  WAYS=fit,function ... runs only those ways, without the profile.
docs/bench.md quotes its output.
"""
import cProfile, gzip, os, pstats, sys, time
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
import keras

def idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)

root = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")  # its four .gz IDX files
x = (idx(f"{root}/train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
y = idx(f"{root}/train-labels-idx1-ubyte.gz", 8).astype(np.int64)

keras.utils.set_random_seed(1)
inputs = keras.Input((28, 28, 1))
h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
h = keras.layers.MaxPooling2D(2)(h)
h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
h = keras.layers.MaxPooling2D(2)(h)
h = keras.layers.Flatten()(h)
h = keras.layers.Dense(128, activation="relu")(h)
logits = keras.layers.Dense(10)(h)
model = keras.Model(inputs, logits)
model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile="auto")

class Progress(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        for metric in self.model.metrics:
            metric.reset_state()
    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])

class LossOnly(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])

def fit(callbacks):
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start

dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
def fit_dataset():
    start = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    return time.perf_counter() - start

def function():
    model.make_train_function()
    iterator = iter(dataset)
    start = time.perf_counter()
    for _ in range(len(dataset)):
        logs = model.train_function(iterator)
    float(logs["loss"])
    return time.perf_counter() - start

fit([])  # warm-up: tracing
print(f"jit_compile resolved to {model.jit_compile}")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
for r in range(rounds):
    ways = [("fit", lambda: fit([])), ("fit+parallax", lambda: fit([Progress()])), ("fit+loss", lambda: fit([LossOnly()])), ("fit(dataset)", fit_dataset), ("function", function)]
    if os.environ.get("WAYS"):
        ways = [way for way in ways if way[0] in os.environ["WAYS"].split(",")]
    for name, run in (ways if r % 2 == 0 else ways[::-1]):
        print(f"round {r + 1}: {name}: {run():.2f} s/epoch", flush=True)

if os.environ.get("WAYS"):
    sys.exit()
profile = cProfile.Profile()
profile.enable()
seconds = fit([Progress()])
profile.disable()
print(f"profiled fit+parallax epoch: {seconds:.2f} s")
stats = pstats.Stats(profile)
stats.sort_stats("tottime").print_stats(12)
