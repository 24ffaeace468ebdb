"""Classify handwritten digits with a fastrnn LSTM, reading each 8x8 image as a sequence.

The data is scikit-learn's copy of the UCI handwritten digits (``sklearn.datasets.load_digits``:
1797 images of 8x8 pixels, values 0-16; nothing is downloaded). Each image is a sequence of
8 steps (its rows) of 8 features (the pixels of a row, scaled to [0, 1]). An LSTM of 64
units reads the rows, and a linear layer on its last output gives the 10 class scores
(softmax cross-entropy). 25 % of the images, stratified by class, are the test set.

Training: Adam (lr 1e-2), mini-batches of 64, with fastrnn's layer, head, optimizer and an
explicit backward (the cross-entropy's gradient enters at the last step only).

Run ``python examples/digits_lstm.py --out DIR`` (``--quick`` for a short training run); it
prints the test accuracy and writes ``digits.png`` (learning curve, confusion matrix) and
``metrics.json`` into DIR.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import fastrnn
from fastrnn.optim import Adam

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py beside this file
from _common import parse_args, pyplot, save, train_minibatches


def load_sequences(seed=0):
    """Train/test split of the digits as ``[8, N, 8]`` float32 sequences and their labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # [N, 8 rows, 8 pixels]
    x_train, x_test, y_train, y_test = train_test_split(images, digits.target, test_size=0.25,
                                                        stratify=digits.target, random_state=seed)
    time_major = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))  # noqa: E731
    return time_major(x_train), time_major(x_test), y_train, y_test


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of ``logits [B, C]`` and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = float(-np.mean(np.log(p[np.arange(n), labels] + 1e-12)))
    grad = p
    grad[np.arange(n), labels] -= 1
    return loss, grad / n


def predict(model, x):
    with fastrnn.no_grad():
        return model(x)[-1].argmax(axis=1)


def train(model, x, y, epochs, batch_size=64, lr=1e-2, seed=0):
    """Mini-batch Adam on the last step's cross-entropy; returns the mean loss of each epoch."""
    optimizer = Adam(model, lr=lr)

    def step(idx):
        model.zero_grad()
        scores = model(np.ascontiguousarray(x[:, idx]))  # [8, B, 10]: the head at every step; the last is read
        loss, grad_last = cross_entropy(scores[-1], y[idx])
        grad = np.zeros_like(scores)
        grad[-1] = grad_last
        model.backward(grad)
        optimizer.step()
        return loss

    model.train()
    curve = train_minibatches(step, x.shape[1], epochs, batch_size, seed)
    model.eval()
    return curve


def main(argv=None):
    args = parse_args(__doc__, "digits", epochs=30, quick_epochs=8, argv=argv)
    epochs = args.epochs

    t0 = time.perf_counter()
    x_train, x_test, y_train, y_test = load_sequences(args.seed)
    model = fastrnn.SequenceModel(input_size=8, hidden_size=64, num_layers=1, output_size=10, cell="lstm",
                                  seed=args.seed)
    curve = train(model, x_train, y_train, epochs, seed=args.seed)
    pred = predict(model, x_test)
    accuracy = float(np.mean(pred == y_test))
    train_accuracy = float(np.mean(predict(model, x_train) == y_train))
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (y_test, pred), 1)
    metrics = {"test_accuracy": accuracy, "train_accuracy": train_accuracy, "epochs": epochs,
               "n_train": int(x_train.shape[1]), "n_test": int(x_test.shape[1]), "final_loss": curve[-1],
               "seconds": time.perf_counter() - t0}

    print(f"handwritten digits as 8 steps of 8 pixels, LSTM(8, 64) + Linear(64, 10), {epochs} epochs")
    print(f"train {metrics['n_train']} images, test {metrics['n_test']}")
    print(f"test accuracy {accuracy:.4f} (train {train_accuracy:.4f}), final training loss {curve[-1]:.4f}")
    print(f"{metrics['seconds']:.1f} s")

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(np.arange(1, epochs + 1), curve, marker="o")
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training cross-entropy")
    ax1.set_title("learning curve")
    ax2.imshow(confusion, cmap="Blues")
    for i in range(10):
        for j in range(10):
            if confusion[i, j]:
                ax2.text(j, i, confusion[i, j], ha="center", va="center", fontsize=7,
                         color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax2.set_xticks(range(10))
    ax2.set_yticks(range(10))
    ax2.set_xlabel("predicted digit")
    ax2.set_ylabel("true digit")
    ax2.set_title(f"test set: accuracy {accuracy:.1%}")
    return save(args.out, "digits", fig, metrics)


if __name__ == "__main__":
    main()
