"""Fashion-MNIST for the reference harnesses: the IDX files parallax reads, as numpy arrays.

A measurement harness for `cargo xtask bench --references`, not part of parallax: it gives
PyTorch's and Keras's own training loops the data that parallax's engines train on, the first
`limit` training images scaled to [0, 1], as `cargo xtask compare --limit-train` takes them.
"""

import argparse
import gzip
import os

import numpy as np


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise SystemExit(f"{directory} holds no {stem}[.gz]: pass the directory parallax found")


def run_arguments(description):
    """The flags every harness takes, as `cargo xtask bench --references` passes them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="mlp or cnn")
    parser.add_argument("--data", required=True, help="the directory of the IDX files")
    parser.add_argument("--limit-train", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def training_set(directory, limit):
    """Images [N, 28, 28] as float32 in [0, 1] and labels [N] as int64, the first `limit`."""
    images = _read_idx(_find(directory, "train-images-idx3-ubyte"))[:limit]
    labels = _read_idx(_find(directory, "train-labels-idx1-ubyte"))[:limit]
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)
