"""Classify MNIST digits with a small convolutional network.

A line-by-line Python port of the Flux model-zoo script `conv.jl` (2020): three
3x3 convolutions with ReLU and 2x2 max-pooling, then one dense layer; Adam at
3e-3, batches of 128, Gaussian noise added to every training batch. After each
epoch it measures test accuracy, saves the best model, drops the learning
rate when progress stalls and stops when training has converged. The
published Flux run reached a test accuracy of 0.9929 in 20 epochs.

    python examples/mnist_conv.py                 # the full 20-epoch schedule
    python examples/mnist_conv.py --epochs 1 --max-steps 50 --savepath runs/quick   # a quick check
    python examples/mnist_conv.py --plots plots   # also draw PNG pictures (needs tinyflux[plot])
    python examples/mnist_conv.py --resume        # continue the run in --savepath (after Ctrl-C)
    python examples/mnist_conv.py --help          # every knob of Args
    mpiexec -n 2 python -m mpi4py examples/mnist_conv.py --distributed   # 2 processes share a batch

Beyond the original, the run lives in a folder (--savepath) that it locks,
never overwrites unasked and saves after every epoch, so that --resume
continues it exactly. That machinery is the library's (tinyflux/train), so
that the loop below reads like conv.jl's.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

import tinyflux as tf
from tinyflux import nn, optim
from tinyflux.train import flag

log = logging.getLogger("mnist_conv")


# -- Arguments ----------------------------------------------------------------------
@dataclass
class Args(tf.train.Settings):
    """Every knob of the run; each field is also a command-line flag (--batch-size for batch_size).

    conv.jl's own knobs are here; the run's (--device, --seed, --resume, --val-split...) come from
    tf.train.Settings.
    """

    lr: float = flag(3e-3, "learning rate of Adam")
    epochs: int = flag(20, "passes over the 60,000 training images", resumable=True)
    batch_size: int = flag(128, "images per training step")
    savepath: str = flag("./", "folder for the best model, mnist_conv.h5", resumable=True)
    checkpoint: str = flag("mnist_conv.h5", "file name of the best model in --savepath",
                           resumable=True)
    dataset: str = flag("mnist", "which dataset", choices=["mnist", "fashion-mnist"])
    data_dir: str | None = flag(None,
                                "folder with the dataset files; unset: the cache, then download",
                                resumable=True)


def parse_args(argv=None) -> Args:
    return tf.train.parse(Args, "Train a convnet on MNIST (the Flux model-zoo conv.jl schedule).",
                          argv)


# -- Data ---------------------------------------------------------------------------
def get_processed_data(args: Args):
    """Training and test sets as uint8 arrays, on the device the model will use."""
    train_images, train_labels = tf.data.load(args.dataset, "train", root=args.data_dir)
    test_images, test_labels = tf.data.load(args.dataset, "test", root=args.data_dir)
    move = args.to_device  # tf.gpu, tf.xpu or tf.cpu, as --device says
    return (move(train_images), move(train_labels)), (move(test_images), move(test_labels))


# -- Model --------------------------------------------------------------------------
def build_model(args: Args, input_shape=(1, 28, 28), nclasses: int = 10) -> nn.Chain:
    """Three Conv -> ReLU -> MaxPool blocks and a dense layer; 28x28 -> 14x14 -> 7x7 -> 3x3.

    ``input_shape`` is one example's (channels, height, width); train() passes the data's.
    """
    channels, height, width = input_shape
    cnn_output_size = (32, height // 8, width // 8)  # 32x3x3 = 288 features after three pools
    return nn.Chain(
        # first convolution, on 28x28 images
        nn.Conv((3, 3), channels, 16, tf.relu, pad=1),
        nn.MaxPool((2, 2)),
        # second convolution, on 14x14 feature maps
        nn.Conv((3, 3), 16, 32, tf.relu, pad=1),
        nn.MaxPool((2, 2)),
        # third convolution, on 7x7 feature maps (pooled to 3x3: the odd row and column are dropped)
        nn.Conv((3, 3), 32, 32, tf.relu, pad=1),
        nn.MaxPool((2, 2)),
        # (N, 32, 3, 3) -> (N, 288) for the dense layer
        nn.flatten,
        nn.Dense(int(np.prod(cnn_output_size)), nclasses))


# -- Helpers ------------------------------------------------------------------------
def augment(x, rng):
    """Add Gaussian noise of standard deviation 0.1,
    so the model does not learn exact pixel values."""
    return x + 0.1 * rng.standard_normal(x.shape, dtype=np.float32)


def checkpoint_path(args: Args) -> str:
    return os.path.join(args.savepath, args.checkpoint)


# -- Training -----------------------------------------------------------------------
def train(args: Args, get_data=get_processed_data, build=build_model) -> tf.train.History:
    """conv.jl's train(): the model-zoo loop, in a run
    folder that it locks, saves every epoch and can resume."""
    # refuses a folder in use or holding another run, before loading data
    with tf.train.Run(args) as run:
        tf.seed(args.seed)
        noise = tf.train.RandomStream.for_run(args)
        log.info("Loading data set")
        (train_images, train_labels), (eval_images, eval_labels) = get_data(args)
        eval_name = "Test"  # the test set chooses the model, as the original does...
        # ...or a held-out part of the training set, so that test() scores unseen images
        if args.val_split:
            (train_images, train_labels), (eval_images, eval_labels) = tf.train.split_validation(
                train_images, train_labels, args.val_split, args.seed)
            eval_name = "Validation"
            log.info(f"Holding out {len(eval_images)} training examples for validation; "
                     f"training on {len(train_images)}")

        log.info("Building model...")
        # the model is built for the data's shape
        input_shape = tf.train.example_shape(train_images)
        # tf.gpu, tf.xpu or tf.cpu, as --device says
        model = args.to_device(build(args, input_shape))
        # Warm-up, as the original "precompiles": nothing to compile in Python, but a long run
        # should not start with data that does not fit the model.
        model(tf.Tensor(tf.data.to_float_images(train_images[:args.batch_size])))

        opt = optim.Adam(model.parameters(), lr=args.lr)
        schedule = tf.train.ModelZoo()  # lr / 10 after 5 epochs without improvement; stop after 10
        # --resume loads
        history = run.start(model, opt, schedule, noise, input_shape=list(input_shape))
        step = tf.train.Step(model, tf.logit_cross_entropy, opt, run.comm, graph=args.graph)

        log.info("Beginning training loop...")
        for epoch in run.epochs(args.epochs):
            rng = noise.for_epoch(epoch)
            for x, y in run.batches(train_images, train_labels):
                loss = step(augment(x, rng), y)  # forward, backward and Adam on one batch
                run.record(loss)  # stays on the device: no synchronisation per step
            mean_loss = run.end_epoch()  # logs the epoch; a NaN stops the run with an error

            # From here to the end of the epoch, Ctrl-C
            # waits: the epoch is saved whole or not at all
            with tf.train.deferred_interrupt():
                acc = tf.train.accuracy(eval_images, eval_labels, model, run.comm)
                log.info(f"[{epoch}]: {eval_name} accuracy: {acc:.4f}")
                history.add(mean_loss, acc, opt.lr)
                if schedule.improved(acc):
                    run.save_best(epoch=epoch, accuracy=acc, lr=opt.lr)
                # conv.jl's learning-rate drops and stops
                stopped = schedule.update(epoch, acc, opt)
                run.save_state(stopped)  # everything --resume needs to continue exactly from here
    return history


# -- Test ---------------------------------------------------------------------------
def load_best_model(args: Args, build=build_model) -> nn.Chain:
    """Rebuild the model for the shape it was trained
    on, then load the saved best weights into it."""
    return tf.train.load_model(checkpoint_path(args), lambda *shape: build(args, *shape),
                               args.to_device)


def test(args: Args, get_data=get_processed_data, build=build_model) -> float:
    """Measure the saved best model on the test set, as the original's test(; kws...)."""
    _, (test_images, test_labels) = get_data(args)
    acc = tf.train.accuracy(test_images, test_labels, load_best_model(args, build))
    print(f"accuracy(test_set, model) = {acc:.4f}")
    return acc


# -- Pictures -----------------------------------------------------------------------
def make_plots(args: Args, history: tf.train.History) -> None:
    """Training curves, test digits with their
    predictions, and the first layer's filters, as PNG."""
    model = load_best_model(args)
    _, (test_images, test_labels) = get_processed_data(args)
    predicted = tf.cpu(tf.train.predict(test_images[:2000], model))
    true = tf.cpu(test_labels[:2000])
    # The first 32 test digits, then up to 16 the model
    # got wrong (at 99% there are few among the first)
    wrong = np.flatnonzero(predicted != true)[:16]
    shown = np.concatenate([np.arange(32), wrong[wrong >= 32]])
    folder = args.plots
    paths = [
        tf.plots.training_curves(os.path.join(folder, "training_curves.png"), history.train_loss,
                                 history.test_accuracy, history.lr),
        tf.plots.prediction_grid(os.path.join(folder, "predictions.png"),
                                 tf.cpu(test_images)[shown], predicted[shown], true[shown]),
        tf.plots.conv_filters(os.path.join(folder, "first_layer_filters.png"),
                              tf.cpu(model[0].weight.data)),
    ]
    log.info("Pictures: " + ", ".join(paths))


def main(args: Args):
    if args.export_onnx:  # the model saved in --savepath, as ONNX, instead of training
        return tf.train.export_saved(args, lambda *shape: build_model(args, *shape))
    history = train(args)
    if tf.train.is_rank_zero(args):  # --distributed: rank 0 tests and draws
        test(args)
        if args.plots:
            make_plots(args, history)


if __name__ == "__main__":
    sys.exit(tf.train.run_command(main, tf.train.setup_logging(parse_args())))
