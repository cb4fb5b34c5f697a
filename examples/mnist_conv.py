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
    python examples/mnist_conv.py --resume        # continue the run saved in --savepath (after Ctrl-C)
    python examples/mnist_conv.py --help          # every knob of Args
    mpiexec -n 2 python -m mpi4py examples/mnist_conv.py --distributed   # two processes share each batch

Beyond the original, the run lives in a folder (--savepath) that it locks,
never overwrites unasked and saves after every epoch, so that --resume
continues it exactly (tinyflux/runs.py). examples/video_conv.py reuses this
file's loop, checkpoint and test on video clips.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

import tinyflux as tf
from tinyflux import nn, optim
from tinyflux.data import batches, num_batches, to_float_images

log = logging.getLogger("mnist_conv")


# -- Arguments ----------------------------------------------------------------------
@dataclass
class Args:
    """Every knob of the run; each field is also a command-line flag (--batch-size for batch_size)."""

    lr: float = 3e-3  # learning rate of Adam
    epochs: int = 20  # passes over the 60,000 training images
    batch_size: int = 128  # images per training step
    savepath: str = "./"  # folder for the best model, mnist_conv.h5
    data_dir: str | None = None  # folder with the MNIST files; default: cache, then download
    dataset: str = "mnist"  # or "fashion-mnist"
    device: str = "auto"  # auto (GPU when there is one), cpu or gpu
    seed: int = 0  # for the initial weights and the noise
    shuffle: bool = False  # shuffle the training set every epoch (the original does not)
    max_steps: int | None = None  # stop each epoch after this many batches (quick runs)
    plots: str | None = None  # folder for PNG pictures of the run; None: no pictures
    checkpoint: str = "mnist_conv.h5"  # file name of the best model inside savepath
    graph: bool = False  # GPU only: replay each training step as one captured CUDA graph (tf.capture)
    val_split: float = 0.0  # fraction of the training set held out to pick the model; 0: the test set does
    distributed: bool = False  # one rank of an MPI job (mpiexec -n N python -m mpi4py ...): a slice of each batch
    resume: bool = False  # continue the run saved in savepath after its last completed epoch
    force: bool = False  # start over in a savepath that holds an earlier run, deleting its files


def make_parser(defaults: Args, description: str) -> argparse.ArgumentParser:
    """One command-line flag per field of Args (--batch-size for batch_size), with the same defaults."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--lr", type=float, default=defaults.lr, help="learning rate of Adam")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per training step")
    p.add_argument("--savepath", default=defaults.savepath, help="folder for the best model, mnist_conv.h5")
    p.add_argument("--data-dir", default=defaults.data_dir,
                   help="folder holding the dataset files; unset: the cache, then download")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default=defaults.dataset, help="which dataset")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default=defaults.device,
                   help="auto uses a CUDA GPU when CuPy finds one")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed for the initial weights and the noise")
    p.add_argument("--shuffle", action="store_true", help="shuffle the training set every epoch")
    p.add_argument("--max-steps", type=int, default=defaults.max_steps,
                   help="stop each epoch after this many batches (quick runs)")
    p.add_argument("--plots", metavar="DIR", default=defaults.plots,
                   help="write PNG pictures of the run into DIR (needs matplotlib: pip install 'tinyflux[plot]')")
    p.add_argument("--checkpoint", default=defaults.checkpoint, help="file name of the best model in --savepath")
    p.add_argument("--graph", action="store_true",
                   help="GPU only: record one training step as a CUDA graph and replay it (tf.capture)")
    p.add_argument("--val-split", type=float, default=defaults.val_split, metavar="FRACTION",
                   help="hold out this fraction of the training set to choose the checkpoint and drive the "
                        "learning-rate drops; the test set is then scored once, at the end")
    p.add_argument("--distributed", action="store_true",
                   help="train as one of the ranks of an MPI job: mpiexec -n 2 python -m mpi4py "
                        "examples/mnist_conv.py --distributed (needs pip install 'tinyflux[mpi]' mpich)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run in --savepath after its last completed epoch (same flags)")
    start.add_argument("--force", action="store_true",
                       help="start over in a --savepath that holds an earlier run, deleting its files")
    return p


def check_args(args: Args, p: argparse.ArgumentParser) -> Args:
    """Refuse values that would fail later, before a long run starts."""
    if args.batch_size < 1 or args.epochs < 1 or (args.max_steps is not None and args.max_steps < 1):
        p.error(f"--batch-size, --epochs and --max-steps must be at least 1, got {args.batch_size}, "
                f"{args.epochs}, {args.max_steps}")
    if not 0 <= args.val_split < 1:
        p.error(f"--val-split: a fraction in [0, 1) expected, got {args.val_split}")
    if not math.isfinite(args.lr) or args.lr <= 0:
        p.error(f"--lr: a positive finite learning rate expected, got {args.lr}")
    if not args.checkpoint or os.path.basename(args.checkpoint) != args.checkpoint or \
            args.checkpoint in (".", ".."):
        p.error(f"--checkpoint: a file name inside --savepath expected, such as mnist_conv.h5; "
                f"got {args.checkpoint!r}")
    if not args.savepath:
        p.error("--savepath: a folder expected (./ for the current one); got an empty string")
    ranks = tf.distributed.launched_by_mpi()
    if ranks > 1 and not args.distributed:
        p.error(f"started as one of {ranks} ranks by mpiexec, but without --distributed: each rank would train "
                "alone, into the same folder. Add --distributed, or start one process")
    if args.distributed and args.graph:
        p.error("--graph with --distributed: not supported until it has been tested on GPUs")
    if args.plots is not None and not tf.plots.available():
        p.error(f"--plots: {tf.plots.MISSING}")
    if args.device == "gpu" and "cupy" not in tf.available_backends():
        p.error("--device gpu: no usable CUDA GPU (is CuPy installed? pip install 'tinyflux[cuda12]')")
    if args.graph and (args.device == "cpu" or "cupy" not in tf.available_backends()):
        p.error(f"--graph: CUDA graphs need a CUDA GPU, and this run is on the CPU (--device {args.device}, "
                f"backends {tf.available_backends()})")
    return args


def parse_args(argv=None) -> Args:
    p = make_parser(Args(), "Train a convnet on MNIST (the Flux model-zoo conv.jl schedule).")
    return check_args(Args(**vars(p.parse_args(argv))), p)


# -- Data ---------------------------------------------------------------------------
def get_processed_data(args: Args):
    """Training and test sets as uint8 arrays, on the device the model will use."""
    train_images, train_labels = tf.data.load(args.dataset, "train", root=args.data_dir)
    test_images, test_labels = tf.data.load(args.dataset, "test", root=args.data_dir)
    move = tf.gpu if use_gpu(args) else (lambda a: a)
    return (move(train_images), move(train_labels)), (move(test_images), move(test_labels))


def split_off_validation(images, labels, fraction: float, seed: int):
    """Hold out ``fraction`` of the examples, a fixed choice made from ``seed``: ((train...), (validation...)).

    Both parts keep the examples' original order, so the training batches are
    still consecutive slices, as without a split.
    """
    count = int(round(fraction * len(images)))
    if not 0 < count < len(images):
        raise ValueError(f"--val-split {fraction}: {count} of {len(images)} examples would be held out; "
                         "both parts need at least one")
    order = np.random.default_rng(seed).permutation(len(images))
    xp = tf.backend.get_array_module(images)
    held_out, kept = xp.asarray(np.sort(order[:count])), xp.asarray(np.sort(order[count:]))
    return (images[kept], labels[kept]), (images[held_out], labels[held_out])


def use_gpu(args: Args) -> bool:
    if args.device == "gpu" and "cupy" not in tf.available_backends():
        raise SystemExit("--device gpu: no usable CUDA GPU (is CuPy installed? pip install tinyflux[cuda12])")
    return args.device == "gpu" or (args.device == "auto" and "cupy" in tf.available_backends())


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
    """Add Gaussian noise of standard deviation 0.1, so the model does not learn exact pixel values."""
    return x + 0.1 * rng.standard_normal(x.shape, dtype=np.float32)


def anynan(model: nn.Module) -> bool:
    """True if any parameter holds a NaN (training has diverged)."""
    return any(bool(tf.backend.get_array_module(p.data).isnan(p.data).any()) for p in model.parameters())


def predict(images, model: nn.Module):
    """The class with the highest score for each image, computed in chunks to bound memory."""
    chunk = max(1, 2**20 // int(np.prod(images.shape[1:])))  # about a million input values: 1,337 28x28 images
    with tf.no_grad():
        labels = [tf.onecold(model(tf.Tensor(to_float_images(images[start:start + chunk]))))
                  for start in range(0, len(images), chunk)]
    return tf.backend.get_array_module(labels[0]).concatenate(labels)


def accuracy(images, labels, model: nn.Module, comm=None) -> float:
    """Fraction of images whose highest score is the true label.

    With several ranks (``comm``), each scores its own slice of the images and the
    counts are summed, so every rank gets the accuracy of the whole set.
    """
    comm = comm or tf.distributed.Communicator()
    part = tf.distributed.shard(len(images), comm)  # one process: all of them
    correct = float((predict(images[part], model) == labels[part]).sum()) if part.stop > part.start else 0.0
    correct, count = tf.distributed.sum_over_ranks([correct, part.stop - part.start], comm)
    return correct / count


def checkpoint_path(args: Args) -> str:
    return os.path.join(args.savepath, args.checkpoint)


# Flags that may change when a run is resumed: they do not change what the run computes.
# (--device may: a run can move between CPU and GPU, though the noise then differs; see train.)
# (--distributed may: the number of ranks changes the rounding of each step, not its arithmetic.)
RESUMABLE_CHANGES = ("epochs", "savepath", "data_dir", "plots", "device", "graph", "resume", "force", "checkpoint",
                     "distributed")


@dataclass
class History:
    """What train() saw, one entry per epoch: for the pictures of --plots."""

    train_loss: list = field(default_factory=list)  # mean training loss of the epoch
    test_accuracy: list = field(default_factory=list)  # measured after the epoch
    lr: list = field(default_factory=list)  # learning rate used during the epoch
    best_accuracy: float = 0.0  # of the saved model


# -- Training -----------------------------------------------------------------------
def train(args: Args, get_data=get_processed_data, build=build_model, **metadata) -> History:
    """The model-zoo loop, in a run folder that it locks, saves after every epoch and can resume.

    ``get_data`` and ``build`` are this file's functions unless another example
    (video_conv.py) passes its own: the loop does not care what the pictures are.
    ``metadata`` (plain values, e.g. class names) is stored in every checkpoint.
    """
    comm = tf.distributed.init() if args.distributed else tf.distributed.Communicator()  # one process: rank 0 of 1
    settings = tf.runs.settings_of(args, ignore=RESUMABLE_CHANGES)
    if comm.rank > 0:  # --distributed: rank 0 alone owns the run folder, and tells the others how the run starts
        return train_in(args, None, comm.broadcast_object(None), settings, get_data, build, metadata, comm)
    with tf.runs.RunFolder(args.savepath, args.checkpoint) as run:  # one run per folder: others are refused
        saved = run.prepare(args.resume, args.force, settings)  # before loading data: refusals come at once
        return train_in(args, run, comm.broadcast_object(saved), settings, get_data, build, metadata, comm)


def train_in(args: Args, run, saved, settings, get_data, build, metadata, comm) -> History:
    """train()'s work in a prepared run folder (None on ranks other than 0); ``saved`` is the metadata of the
    state to resume, or None."""
    tf.seed(args.seed)
    xp_rng = np.random.default_rng(args.seed)
    if comm.size > 1:
        tf.distributed.limit_blas_threads(comm)  # ranks x BLAS threads <= cores
        if use_gpu(args):
            tf.distributed.select_gpu(comm)  # one GPU per rank on each machine

    log.info("Loading data set")
    (train_images, train_labels), (test_images, test_labels) = get_data(args)
    # The examples that choose the checkpoint and drive the schedule: the test set, as the original
    # does, or with --val-split a part of the training set, so that the test set stays unseen until test()
    eval_name, (eval_images, eval_labels) = "Test", (test_images, test_labels)
    if args.val_split:
        (train_images, train_labels), (eval_images, eval_labels) = split_off_validation(
            train_images, train_labels, args.val_split, args.seed)
        eval_name = "Validation"
        log.info(f"Holding out {len(eval_images)} training examples for validation; "
                 f"training on {len(train_images)}")

    log.info("Building model...")
    first_batch = to_float_images(train_images[:args.batch_size])  # (B, C, *S), whatever the data is
    input_shape = tuple(int(n) for n in first_batch.shape[1:])  # the model is built for the data's shape
    model = build(args, input_shape)
    if use_gpu(args):
        model = tf.gpu(model)
    metadata = {**metadata, "input_shape": list(input_shape)}  # so a model can be rebuilt without the data

    # Warm-up: one forward call before training, as the original "precompiles". In Python there is
    # nothing to compile, but it checks the data fits the model before a long run starts.
    model(tf.Tensor(first_batch))

    def loss(noisy_x, y):
        y_hat = model(tf.Tensor(noisy_x))
        return tf.logit_cross_entropy(y_hat, y)

    opt = optim.Adam(model.parameters(), lr=args.lr)
    if comm.size > 1:
        opt = tf.distributed.DataParallel(opt, comm)  # step() first sums the gradients of all ranks

    history = History()
    first_epoch, best_acc, best_epoch, last_improvement = 1, 0.0, 0, 0
    if saved is not None and run is not None:  # --resume: the state after the last completed epoch, exactly
        tf.load(run.state, model, opt)  # weights, Adam's m and v, t, and the learning rate at that point
    if comm.size > 1:  # every rank starts from rank 0's model and optimizer, loaded or new
        tf.distributed.broadcast_parameters(model, comm)
        tf.distributed.broadcast_optimizer(opt, comm)
    if saved is not None:
        first_epoch, best_acc = saved["epoch"] + 1, saved["best_accuracy"]
        best_epoch, last_improvement = saved["best_epoch"], saved["last_improvement"]
        history = History(saved["train_loss"], saved["test_accuracy"], saved["lr_history"], best_acc)
        if saved["noise_state"]:  # saved by a CPU run (see the GPU note in the loop)
            xp_rng.bit_generator.state = json.loads(saved["noise_state"])
        log.info(f"Resuming the run in {args.savepath} after epoch {saved['epoch']} "
                 f"(best accuracy {best_acc:.4f} in epoch {saved['best_epoch']})")
        if saved["stopped"]:
            log.info(f" -> That run had already stopped ({saved['stopped']}): nothing more to train")
            return history

    # --graph: record the step once (on the first batch, for its shapes), then replay it
    graph_step = None
    if args.graph:
        graph_step = tf.capture(model, tf.logit_cross_entropy, opt,
                                *next(batches(train_images, train_labels, args.batch_size)))

    def train_step(x, y):
        """Forward, backward and update on one batch; returns the loss, still on the device."""
        noisy_x = augment(x, xp_rng)
        if graph_step is not None and x.shape == graph_step.x.shape:  # a smaller last batch runs eagerly
            return graph_step(noisy_x, y)
        if comm.size > 1:
            return distributed_step(noisy_x, y)
        batch_loss = loss(noisy_x, y)
        batch_loss.backward()
        opt.step()
        opt.zero_grad()
        return batch_loss.data

    def distributed_step(noisy_x, y):
        """--distributed: this rank's slice of the batch (all ranks drew the same noise for the whole batch,
        as one process would); returns this rank's share of the batch's mean loss."""
        part = tf.distributed.shard(len(y), comm)
        examples, share = part.stop - part.start, 0.0
        if examples:  # a short last batch can leave a rank without any
            batch_loss = loss(noisy_x[part], y[part])
            batch_loss.backward()
            share = batch_loss.data * (examples / len(y))
        opt.step(examples=examples)  # the gradients of the whole batch, then Adam
        opt.zero_grad()
        return share

    log.info("Beginning training loop...")
    steps_per_epoch = num_batches(len(train_images), args.batch_size)
    if args.max_steps:
        steps_per_epoch = min(steps_per_epoch, args.max_steps)
    for epoch in range(first_epoch, args.epochs + 1):
        if use_gpu(args):
            # CuPy's generators cannot be saved, so on the GPU each epoch draws its noise from a generator
            # seeded by (seed, epoch), which a resumed run rebuilds; the CPU's generator state is saved instead.
            import cupy
            xp_rng = cupy.random.default_rng([args.seed, epoch])
        start = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", leave=False,
                   disable=not sys.stderr.isatty() or comm.rank > 0)
        total_loss = 0.0
        for step, (x, y) in enumerate(batches(train_images, train_labels, args.batch_size, args.shuffle,
                                              np.random.default_rng(args.seed + epoch))):
            if step == steps_per_epoch:
                break
            batch_loss = train_step(x, y)
            total_loss += batch_loss  # stays on the device: no synchronisation per step
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{float(batch_loss):.4f}")
        bar.close()
        elapsed = time.perf_counter() - start
        mean_loss = tf.distributed.sum_over_ranks([float(total_loss)], comm)[0] / steps_per_epoch  # ranks' shares
        log.info(f"[{epoch}]: {elapsed:.1f} s, {1000 * elapsed / steps_per_epoch:.1f} ms/step, "
                 f"mean training loss {mean_loss:.4f}")
        history.train_loss.append(mean_loss)
        history.lr.append(opt.lr)

        # Stop on NaN: an error, and nothing of this epoch is saved
        nan_params = anynan(model)
        if nan_params or not math.isfinite(mean_loss):
            best = f"its best model, from epoch {best_epoch}, is in {checkpoint_path(args)}" if best_epoch else \
                "no model was saved"
            raise tf.runs.DivergedError(f"[{epoch}]: training diverged (mean loss {mean_loss}, NaN parameters: "
                                        f"{nan_params}); {best}. A smaller --lr may help")
        if comm.size > 1:
            tf.distributed.check_same_parameters(model, comm)  # ranks that drifted apart are an error

        # From here to the end of the epoch, Ctrl-C waits: the epoch's result is either saved whole or not at all
        with tf.runs.deferred_interrupt():
            acc = accuracy(eval_images, eval_labels, model, comm)
            log.info(f"[{epoch}]: {eval_name} accuracy: {acc:.4f}")
            history.test_accuracy.append(acc)

            stopped = ""  # why the run ends after this epoch, if it does
            if acc >= best_acc:
                log.info(f" -> New best accuracy! Saving model out to {checkpoint_path(args)}")
                if run is not None:  # rank 0 writes the files
                    run.save_best(model, opt, epoch=epoch, accuracy=acc, lr=opt.lr, **metadata)
                best_acc, last_improvement, best_epoch = acc, epoch, epoch
                history.best_accuracy = acc

            # The original checks this before saving, so the model that reaches 99.9% was never saved
            # (and a run that reached it in epoch 1 left no checkpoint for test()); here it is saved first.
            if acc >= 0.999:
                log.info(" -> Early-exiting: We reached our target accuracy of 99.9%")
                stopped = "reached the target accuracy"

            # No improvement for 5 epochs: divide the learning rate by 10, then give it 5 more epochs
            elif epoch - last_improvement >= 5 and opt.lr > 1e-6:
                opt.lr /= 10.0
                log.warning(f" -> Haven't improved in a while, dropping learning rate to {opt.lr:g}!")
                last_improvement = epoch

            elif epoch - last_improvement >= 10:
                log.warning(" -> We're calling this converged.")
                stopped = "converged"

            # Everything the next epoch depends on, so that --resume continues exactly from here
            if run is not None:
                run.save_state(model, opt, settings, epoch=epoch, best_accuracy=best_acc, best_epoch=best_epoch,
                               last_improvement=last_improvement, stopped=stopped,
                               noise_state=json.dumps(xp_rng.bit_generator.state) if not use_gpu(args) else "",
                               train_loss=history.train_loss, test_accuracy=history.test_accuracy,
                               lr_history=history.lr, **metadata)
        if stopped:
            break
    return history


# -- Test ---------------------------------------------------------------------------
def load_best_model(args: Args, build=build_model) -> nn.Chain:
    """Rebuild the model with fresh random weights, then load the saved best weights into it."""
    saved = tf.io.read_metadata(checkpoint_path(args))
    model = build(args, *([tuple(saved["input_shape"])] if "input_shape" in saved else []))  # as trained
    if use_gpu(args):
        model = tf.gpu(model)
    tf.load(checkpoint_path(args), model)
    return model


def test(args: Args, get_data=get_processed_data, build=build_model) -> float:
    """Measure the saved best model on the test set, as the original's test(; kws...)."""
    _, (test_images, test_labels) = get_data(args)
    acc = accuracy(test_images, test_labels, load_best_model(args, build))
    print(f"accuracy(test_set, model) = {acc:.4f}")
    return acc


# -- Pictures -----------------------------------------------------------------------
def make_plots(args: Args, history: History) -> None:
    """Training curves, test digits with their predictions, and the first layer's filters, as PNG."""
    model = load_best_model(args)
    _, (test_images, test_labels) = get_processed_data(args)
    predicted, true = tf.cpu(predict(test_images[:2000], model)), tf.cpu(test_labels[:2000])
    # The first 32 test digits, then up to 16 the model got wrong (at 99% there are few among the first)
    wrong = np.flatnonzero(predicted != true)[:16]
    shown = np.concatenate([np.arange(32), wrong[wrong >= 32]])
    paths = [
        tf.plots.training_curves(os.path.join(args.plots, "training_curves.png"), history.train_loss,
                                 history.test_accuracy, history.lr),
        tf.plots.prediction_grid(os.path.join(args.plots, "predictions.png"), tf.cpu(test_images)[shown],
                                 predicted[shown], true[shown]),
        tf.plots.conv_filters(os.path.join(args.plots, "first_layer_filters.png"), tf.cpu(model[0].weight.data)),
    ]
    log.info("Pictures: " + ", ".join(paths))


class FluxStyle(logging.Formatter):
    """Log lines like Julia's: "[ Info: ...", "┌ Warning: ..."."""

    def format(self, record):
        level = {"INFO": "Info", "WARNING": "Warning", "ERROR": "Error"}.get(record.levelname, record.levelname)
        return f"[ {level}: {record.getMessage()}"


def run_script(arguments: Args, body) -> int:
    """Run ``body(arguments)`` as a command: an expected failure ends with one line and an exit status.

    Ctrl-C says what was saved and how to resume (status 130, the shell's code for
    an interrupt); a diverged run (1), or a run folder, checkpoint or data set that
    cannot be used (2), says why.
    """
    comm = tf.distributed.init() if arguments.distributed else tf.distributed.Communicator()
    try:
        body(arguments)
        return 0
    except KeyboardInterrupt:
        if comm.rank == 0:
            log.error(interrupted_message(arguments))
        status = 130
    except tf.runs.DivergedError as error:
        log.error(str(error))
        status = 1
    except (tf.runs.RunFolderError, tf.CheckpointError, tf.data.DatasetError) as error:
        log.error(str(error))
        status = 2
    if comm.size > 1:  # the other ranks may be waiting for this one in a collective: end them all now
        comm.abort(status)
    return status


def interrupted_message(args: Args) -> str:
    run = tf.runs.RunFolder(args.savepath, args.checkpoint)
    try:
        epoch = tf.io.read_metadata(run.state)["epoch"]
    except (tf.CheckpointError, KeyError):
        return f"Interrupted before the first epoch ended: nothing was saved in {args.savepath}"
    flags = [flag for flag in sys.argv[1:] if flag not in ("--resume", "--force")]
    command = " ".join(shlex.quote(word) for word in ["python", sys.argv[0], *flags, "--resume"])
    return f"Interrupted: the run is saved after epoch {epoch} in {run.state}. To continue it: {command}"


def is_rank_zero(args: Args) -> bool:
    """Whether this process logs, tests and draws: always, unless it is a rank other than 0 of a --distributed job."""
    return not args.distributed or tf.distributed.init().rank == 0


def main(arguments: Args) -> None:
    run_history = train(arguments)
    if is_rank_zero(arguments):
        test(arguments)
        if arguments.plots:
            make_plots(arguments, run_history)


def setup_logging(arguments: Args) -> Args:
    handler = logging.StreamHandler()
    handler.setFormatter(FluxStyle())
    logging.basicConfig(level=logging.INFO if is_rank_zero(arguments) else logging.ERROR, handlers=[handler])
    return arguments


if __name__ == "__main__":
    sys.exit(run_script(setup_logging(parse_args()), main))
