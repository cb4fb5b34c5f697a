"""Pictures of a training run, written as PNG files with matplotlib.

matplotlib is an optional extra (``pip install 'tinyflux[plot]'``): this
module imports it only when a picture is drawn, so ``import tinyflux`` never
needs it. Each function takes plain
NumPy arrays and lists, writes one file and returns its path. The file is
written under a temporary name and renamed when complete (see ``files.py``).

Three pictures a learner would rather look at than read:

- :func:`training_curves`: training loss and test accuracy per epoch, with the
  epochs where the learning rate was divided marked;
- :func:`prediction_grid`: images with the predicted and the true label,
  mistakes framed in red;
- :func:`conv_filters`: the weights of a convolution layer as small images.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from .files import atomic_path

MISSING = "matplotlib is not installed; it is an optional extra: pip install 'tinyflux[plot]'"


def available() -> bool:
    """Whether matplotlib can be imported (checked without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    if not available():
        raise ModuleNotFoundError(MISSING)
    import matplotlib
    matplotlib.use("Agg")  # draw into files; no window, works without a display
    import matplotlib.pyplot as plt
    return plt


def _save(figure, path) -> str:
    plt = _pyplot()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return str(path)


def training_curves(path, train_loss, test_accuracy, lr) -> str:
    """Two panels over epochs 1..E: mean training loss (log scale) and test accuracy.

    ``lr[e]`` is the learning rate used during epoch e + 1; a dashed line marks
    each epoch that started with a smaller rate than the one before.
    """
    if not (len(train_loss) == len(test_accuracy) == len(lr)) or not train_loss:
        raise ValueError("training_curves: need one loss, accuracy and lr per epoch, got "
                         f"{len(train_loss)}, {len(test_accuracy)} and {len(lr)} values")
    plt = _pyplot()
    epochs = np.arange(1, len(train_loss) + 1)
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_axes.semilogy(epochs, train_loss, "o-")
    loss_axes.set(xlabel="epoch", ylabel="mean training loss (log scale)", title="Training loss")
    accuracy_axes.plot(epochs, test_accuracy, "o-", color="tab:green")
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy")
    for e in range(1, len(lr)):
        if lr[e] < lr[e - 1]:
            for axes in (loss_axes, accuracy_axes):
                axes.axvline(e + 0.5, color="tab:red", linestyle="--", linewidth=1)
            accuracy_axes.annotate(f"lr -> {lr[e]:g}", (e + 0.5, 0.02),
                                   xycoords=("data", "axes fraction"), rotation=90,
                                   color="tab:red", fontsize=8, ha="right")
    from matplotlib.ticker import MaxNLocator
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    return _save(figure, path)


def prediction_grid(path, images, predicted, true, columns: int = 8, class_names=None) -> str:
    """Images (N, H, W) in rows of ``columns``, titled
    with the prediction; mistakes in red with the truth."""
    images = np.asarray(images)
    if images.ndim != 3 or not len(images) == len(predicted) == len(true):
        raise ValueError("prediction_grid: need images (N, H, W) and N predictions and labels, "
                         f"got images {images.shape}, {len(predicted)} "
                         f"predictions, {len(true)} labels")
    plt = _pyplot()
    name = (lambda k: str(class_names[k])) if class_names is not None else str
    rows = -(-len(images) // columns)  # ceiling division
    aspect = images.shape[2] / images.shape[1]  # wider tiles for frame strips
    figure, axes_grid = plt.subplots(rows, columns, figsize=(1.3 * aspect * columns, 1.5 * rows),
                                     squeeze=False)
    for index, axes in enumerate(axes_grid.flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if index >= len(images):
            axes.axis("off")
            continue
        axes.imshow(images[index], cmap="gray_r")
        if predicted[index] == true[index]:
            axes.set_title(name(int(predicted[index])), fontsize=9)
        else:
            axes.set_title(f"{name(int(predicted[index]))} (true {name(int(true[index]))})",
                           fontsize=9, color="tab:red")
            for spine in axes.spines.values():
                spine.set(color="tab:red", linewidth=3)
    return _save(figure, path)


def clip_strips(clips, frames: int = 4) -> np.ndarray:
    """Clips (N, C, T, H, W) as grey strips (N, H, frames * (W + 2)):
    ``frames`` evenly spaced frames side by side, the channels
    averaged, a grey line between frames; for :func:`prediction_grid`."""
    clips = np.asarray(clips)
    chosen = np.linspace(0, clips.shape[2] - 1, frames).astype(int)
    # (N, C, T, H, W) -> (N, frames, H, W)
    shown = clips.mean(axis=1)[:, chosen].round().astype(np.uint8)
    # (N, frames, H, W + 2)
    shown = np.pad(shown, ((0, 0), (0, 0), (0, 0), (0, 2)), constant_values=128)
    n, _, height, _ = shown.shape
    # (N, H, frames, W + 2) -> (N, H, frames (W + 2))
    return shown.transpose(0, 2, 1, 3).reshape(n, height, -1)


def conv_filters(path, weight, channel: int = 0) -> str:
    """The filters of a convolution, as they read one input
    channel: weight (O, C, kh, kw) or (O, C, kt, kh, kw).

    A 2-D layer gives one small image per filter; a 3-D (video) layer gives
    one row per filter with one image per frame offset. Blue is negative, red
    positive, white zero, on one scale for all filters. For an input of
    several channels (colour: C = 3) the picture shows the weights on input
    channel ``channel`` (0: red).
    """
    weight = np.asarray(weight)
    if weight.ndim not in (4, 5) or not 0 <= channel < weight.shape[1]:
        raise ValueError("conv_filters: need the weight of a convolution, (O, C, kh, kw) or (O, "
                         "C, kt, kh, kw), and a channel in 0..C-1; got shape "
                         f"{weight.shape} and channel {channel}")
    plt = _pyplot()
    filters = weight[:, channel]  # (O, C, *K) -> (O, *K): the weights on one input channel
    if filters.ndim == 3:  # 2-D kernels: two rows of filters
        columns = -(-len(filters) // 2)
        tiles = [[filters[r * columns + c] if r * columns + c < len(filters) else None
                  for c in range(columns)] for r in range(2)]
        titles = [[f"filter {r * columns + c}" for c in range(columns)] for r in range(2)]
    else:  # 3-D kernels: row o shows filter o at time offsets 0, 1, 2, ...
        tiles = [list(f) for f in filters]
        titles = [[f"filter {o}, t+{t}" for t in range(filters.shape[1])]
                  for o in range(len(filters))]
    limit = float(np.abs(filters).max()) or 1.0
    rows, columns = len(tiles), len(tiles[0])
    figure, axes_grid = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.3 * rows),
                                     squeeze=False)
    for r in range(rows):
        for c in range(columns):
            axes = axes_grid[r, c]
            axes.set_xticks([])
            axes.set_yticks([])
            if tiles[r][c] is None:
                axes.axis("off")
                continue
            axes.imshow(tiles[r][c], cmap="bwr", vmin=-limit, vmax=limit)
            axes.set_title(titles[r][c], fontsize=7)
    return _save(figure, path)


def confusion_matrix(path, counts, class_names) -> str:
    """The confusion matrix as a picture: rows the true
    classes, columns the predicted ones, counts in the cells."""
    plt = _pyplot()
    counts = np.asarray(counts)
    size = max(3.0, 0.5 * len(class_names) + 1.5)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(counts, cmap="Blues")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, column), n in np.ndenumerate(counts):
        axes.text(column, row, str(n), ha="center", va="center",
                  color="white" if n > counts.max() / 2 else "black")
    return _save(figure, path)


def clip_pictures(folder, history, clips, predicted, true, class_names, first_weight) -> list[str]:
    """The pictures of a video run, in ``folder``: training curves, 16 test
    clips (4 frames each) with their predictions, the confusion matrix, and
    the first layer's filters. All arrays NumPy; returns the paths."""
    import os
    counts = np.zeros((len(class_names),) * 2, np.int64)
    np.add.at(counts, (np.asarray(true, np.int64), np.asarray(predicted, np.int64)), 1)
    return [
        training_curves(
            os.path.join(folder, "video_training_curves.png"),
            history.train_loss,
            history.test_accuracy,
            history.lr,
        ),
        prediction_grid(
            os.path.join(folder, "video_predictions.png"),
            clip_strips(clips[:16]),
            predicted[:16],
            true[:16],
            columns=4,
            class_names=class_names,
        ),
        confusion_matrix(os.path.join(folder, "video_confusion.png"), counts, class_names),
        # colour: the red
        conv_filters(os.path.join(folder, "video_first_layer_filters.png"), first_weight),
    ]
