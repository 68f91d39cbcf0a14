"""Keras 3's `model.fit` on TensorFlow, on Fashion-MNIST, timed per epoch.

A measurement harness for `cargo xtask bench --references`, not part of parallax. It trains
parallax's `mlp` (784-128-10) or `cnn` (conv32-pool-conv64-pool-fc128-fc10, 3x3 "same"
convolutions, 2x2 pooling) preset the way a Keras user writes it: channels-last arrays in
memory, `model.fit(shuffle=True)`, `keras.optimizers.Adam(1e-3)` with its defaults and
`compile`'s default `jit_compile="auto"`. TensorFlow's intra- and inter-op pools get the
thread count, as parallax's TensorFlow sessions do. A callback times each epoch's training
(no validation runs). It prints one JSON object.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from fashion_mnist import run_arguments, training_set  # noqa: E402


def model(name):
    layers = keras.layers
    if name == "mlp":
        body = [layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10)]
    elif name == "cnn":
        body = [
            layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10),
        ]
    else:
        raise SystemExit(f"unknown model {name}: mlp or cnn")
    return keras.Sequential([keras.Input((28, 28, 1))] + body)


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({
            "seconds": time.perf_counter() - self.start,
            "train_loss": float((logs or {}).get("loss", float("nan"))),
        })


def main():
    args = run_arguments(__doc__)

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(42)
    images, labels = training_set(args.data, args.limit_train)
    net = model(args.model)
    net.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    timer = EpochTimer()
    net.fit(images[..., None], labels, batch_size=args.batch_size, epochs=args.epochs,
            shuffle=True, verbose=0, callbacks=[timer])
    print(json.dumps({
        "framework": f"Keras {keras.__version__} on TensorFlow {tf.__version__}",
        "loop": f"model.fit, jit_compile={net.jit_compile}",
        "threads": args.threads,
        "examples": len(images),
        "epochs": timer.epochs,
    }))


if __name__ == "__main__":
    main()
