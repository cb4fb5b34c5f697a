"""Draw the walkthrough's explanatory pictures into docs/images/ (needs matplotlib: pip install 'tinyflux[plot]').

    python docs/make_pictures.py            # writes docs/images/explain_*.png

Where a picture shows numbers, tinyflux computes them (im2col, max-pooling
and its gradient, a backward pass), so a picture cannot show something the
code does not do. tests/test_pictures.py draws them again and compares them
with the committed files, so the pictures stay current.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import tinyflux as tf
from tinyflux.backends.columns import im2col

IMAGES = Path(__file__).resolve().parent / "images"
NAMES = ("explain_conv_sliding", "explain_conv_channels", "explain_im2col", "explain_maxpool",
         "explain_shapes", "explain_backward", "explain_receptive_field")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 9, "svg.hashsalt": "tinyflux"})
    return plt


def _save(figure, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    figure.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: the bytes depend on the picture only
    figure.clf()
    return path


def _grid(axes, values, highlight=None, colours=None, title=""):
    """A table of numbers as coloured squares; ``highlight`` is a boolean mask drawn in orange."""
    rows, cols = values.shape
    axes.set_xlim(0, cols)
    axes.set_ylim(rows, 0)
    axes.set_aspect("equal")
    axes.set_xticks([])
    axes.set_yticks([])
    for r in range(rows):
        for c in range(cols):
            face = "white"
            if colours is not None and colours[r][c]:
                face = colours[r][c]
            if highlight is not None and highlight[r, c]:
                face = "#f8b34a"
            axes.add_patch(_rectangle((c, r), face))
            text = values[r, c]
            if text != "":
                axes.text(c + 0.5, r + 0.5, text, ha="center", va="center")
    axes.set_title(title)


def _rectangle(corner, face):
    from matplotlib.patches import Rectangle
    return Rectangle(corner, 1, 1, facecolor=face, edgecolor="#555555", linewidth=0.8)


def conv_sliding(plt, folder):
    """A 3x3 kernel sliding over a 4x4 image padded to 6x6: three of its 16 positions, and the output it fills.

    The image is np.arange(16), 0 to 15, as in the walkthrough's sessions, so a reader can check one against the other.
    """
    image = np.arange(16).reshape(4, 4)
    padded = np.zeros((6, 6), int)
    padded[1:5, 1:5] = image
    out = tf.conv(tf.Tensor(image[None, None].astype(np.float32)), tf.Tensor(np.ones((1, 1, 3, 3), np.float32)),
                  pad=1).numpy()[0, 0].astype(int)  # the sums of each 3x3 patch
    figure, axes = plt.subplots(1, 4, figsize=(10, 2.9))
    for panel, (r, c) in zip(axes[:3], ((0, 0), (0, 1), (2, 3))):
        window = np.zeros((6, 6), bool)
        window[r:r + 3, c:c + 3] = True
        border = [["#dddddd" if i in (0, 5) or j in (0, 5) else "" for j in range(6)] for i in range(6)]
        _grid(panel, padded.astype(str), window, border, f"output ({r}, {c})")
    filled = np.full((4, 4), "", dtype=object)
    for r, c in ((0, 0), (0, 1), (2, 3)):
        filled[r, c] = str(out[r, c])
    _grid(axes[3], filled, title="the 4x4 output")
    figure.suptitle("A 3x3 kernel of ones slides over the 4x4 image 0..15, padded with zeros (grey); each output is "
                    "the sum of the orange patch")
    figure.tight_layout()
    return _save(figure, folder, "explain_conv_sliding")


def conv_channels(plt, folder):
    """One filter of the second MNIST layer reads all 16 input channels: 16 x 3 x 3 weights and a bias."""
    figure, axes = plt.subplots(figsize=(10, 3.2))
    axes.set_xlim(0, 13)
    axes.set_ylim(0, 4)
    axes.axis("off")
    for k in range(16):  # the 16 input maps, stacked with an offset
        axes.add_patch(_skewed(0.3 + k * 0.08, 0.4 + k * 0.1, 2.0, "#cfe3f5" if k % 2 else "#b5d3ef"))
        axes.add_patch(_skewed(0.9 + k * 0.08, 1.2 + k * 0.1, 0.45, "#f8b34a"))
    axes.text(1.5, 0.1, "16 input maps, 14x14\n(the orange 3x3 patch on each)", ha="center", va="top")
    axes.annotate("", xy=(4.6, 2.0), xytext=(3.6, 2.0), arrowprops={"arrowstyle": "->"})
    axes.text(8.0, 2.6, "one output value = sum over 16 channels x 3 x 3 positions\n"
                        "of weight x input, plus the filter's bias: 16*9 + 1 = 145 numbers", ha="center")
    axes.text(8.0, 1.4, "32 filters: 32 x (16*9) + 32 = 4,640 parameters", ha="center", weight="bold")
    count = tf.nn.Conv((3, 3), 16, 32).num_parameters()
    axes.text(8.0, 0.8, f"(nn.Conv((3, 3), 16, 32).num_parameters() = {count:,})", ha="center", color="#555555")
    axes.add_patch(_skewed(11.3, 0.9, 0.9, "#cfe3f5"))  # one of the 32 output maps, and the value this filter wrote
    axes.add_patch(_skewed(11.55, 1.2, 0.22, "#f8b34a"))
    axes.text(11.85, 0.7, "output map 1 of 32,\n14x14: one value", ha="center", va="top")
    axes.annotate("", xy=(11.6, 1.55), xytext=(10.9, 2.4), arrowprops={"arrowstyle": "->"})
    return _save(figure, folder, "explain_conv_channels")


def _skewed(x, y, size, face):
    from matplotlib.patches import Polygon
    return Polygon([(x, y), (x + size, y), (x + size + 0.4, y + size * 0.6), (x + 0.4, y + size * 0.6)],
                   closed=True, facecolor=face, edgecolor="#555555", linewidth=0.6)


def im2col_picture(plt, folder):
    """The columns of the 4x4 example: the row that kernel offset (0, 0) fills, and the patch of one column."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    col = im2col(x, (3, 3), (1, 1), (0, 0)).reshape(9, 4).astype(int)  # (C*3*3, N*2*2)
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.6), gridspec_kw={"width_ratios": [4, 4]})
    patch = np.zeros((4, 4), bool)
    patch[0:3, 1:4] = True  # the patch under output position (0, 1): column 1
    _grid(axes[0], x[0, 0].astype(int).astype(str), patch, title="image: the patch of output (0, 1)")
    row0 = np.zeros((9, 4), bool)
    row0[0, :] = True
    column = [["#cfe3f5" if j == 1 else "" for j in range(4)] for _ in range(9)]
    _grid(axes[1], col.astype(str), row0, column,
          "columns (9 x 4): row 0 = offset (0, 0) at every output,\ncolumn 1 (blue) = the orange patch")
    figure.tight_layout()
    return _save(figure, folder, "explain_im2col")


def maxpool_picture(plt, folder):
    """A 2x2 max-pool on a 4x4 input: the winners, the output, and where the gradient goes back."""
    values = np.array([[1, 3, 2, 0], [4, 2, 1, 5], [0, 1, 7, 2], [6, 2, 3, 3]], np.float32)
    x = tf.Tensor(values[None, None], requires_grad=True)
    y = tf.maxpool(x, (2, 2))
    gradient = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    (y * tf.Tensor(gradient[None, None])).sum().backward()
    winners = x.grad[0, 0] != 0
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    _grid(axes[0], values.astype(int).astype(str), winners, title="input: the winner\nof each 2x2 window")
    _grid(axes[1], y.numpy()[0, 0].astype(int).astype(str), title="output: the maxima")
    _grid(axes[2], np.where(winners, x.grad[0, 0], 0).round(1).astype(str), winners,
          title="gradient back: 0.1, 0.2, 0.3, 0.4\nto the winners, 0 elsewhere")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.82)  # room for the two-line titles
    return _save(figure, folder, "explain_maxpool")


def shapes_picture(plt, folder):
    """The shape of one image's data after each layer of the MNIST model, as model.summary computes it."""
    model = tf.models.mnist_convnet()
    rows = model.summary((1, 28, 28)).rows[1:-1]  # the layers, without the Chain( and ) rows
    stages = [("input", (1, 28, 28))] + [(name.strip(), shape) for name, shape, _ in rows]
    figure, axes = plt.subplots(figsize=(10, 3.4))
    axes.set_xlim(0, len(stages))
    axes.set_ylim(-0.1, 3.2)
    axes.axis("off")
    for i, (name, shape) in enumerate(stages):
        height = 0.3 + 1.8 * (np.prod(shape) / 12544) ** 0.5  # grows with the number of values, less than in proportion
        axes.add_patch(_box(i + 0.25, 1.9 - height / 2, 0.5, height))
        axes.text(i + 0.5, 0.45, "x".join(str(s) for s in shape), ha="center", va="center", fontsize=8)
        axes.text(i + 0.5, 0.05, name.split("(")[0], ha="center", va="bottom", fontsize=8, weight="bold")
        if i:
            axes.annotate("", xy=(i + 0.25, 1.9), xytext=(i - 0.25, 1.9), arrowprops={"arrowstyle": "->"})
    axes.set_title("One 28x28 image through the model: channels x height x width after each layer "
                   "(taller boxes hold more values)")
    return _save(figure, folder, "explain_shapes")


def _box(x, y, width, height):
    from matplotlib.patches import Rectangle
    return Rectangle((x, y), width, height, facecolor="#cfe3f5", edgecolor="#555555")


def backward_picture(plt, folder):
    """The graph of c = a*a + a at a = 3: each node's value, and the gradient backward writes into it."""
    a = tf.Tensor(np.array(3.0), requires_grad=True)
    b = a * a
    c = b + a
    c.backward()
    figure, axes = plt.subplots(figsize=(8, 3))
    axes.set_xlim(0, 8)
    axes.set_ylim(0, 3)
    axes.axis("off")
    nodes = {"a": (1, 1.5), "b = a * a": (3.8, 2.3), "c = b + a": (6.6, 1.5)}
    labels = {"a": f"a = {float(a.data):g}\ndc/da = {float(a.grad):g}",
              "b = a * a": f"b = a * a = {float(b.data):g}\ndc/db = 1",
              "c = b + a": f"c = b + a = {float(c.data):g}\ndc/dc = 1 (start)"}
    for name, (x, y) in nodes.items():
        axes.text(x, y, labels[name], ha="center", va="center",
                  bbox={"boxstyle": "round", "facecolor": "#cfe3f5", "edgecolor": "#555555"})
    arrow = {"arrowstyle": "->", "color": "#555555"}
    axes.annotate("", xy=(3.0, 2.2), xytext=(1.6, 1.7), arrowprops=arrow)
    axes.annotate("", xy=(5.9, 1.7), xytext=(4.6, 2.2), arrowprops=arrow)
    axes.annotate("", xy=(5.8, 1.4), xytext=(1.7, 1.4), arrowprops=arrow)
    axes.text(1.3, 2.15, "*: dc/da += 2a x 1 = 6", fontsize=8, color="#c0392b", rotation=19)
    axes.text(3.7, 1.05, "+: dc/da += 1", fontsize=8, color="#c0392b")
    axes.set_title("Forward (arrows) computes the values; backward adds each path's share: dc/da = 6 + 1 = 7")
    return _save(figure, folder, "explain_backward")


def receptive_field_picture(plt, folder):
    """Along one axis (time, or a row of pixels): which cells of each layer one output of the top layer depends
    on, for two blocks of a 3-wide padded convolution and a 2-wide pool over 16 inputs."""
    layers = ["input", "conv 3", "pool 2", "conv 3", "pool 2"]
    sizes = [16, 16, 8, 8, 4]
    spans = [(1, 1)]  # top down: the cells (first, last) of each layer that output 1 of the top layer reads
    for name, size in zip(reversed(layers[1:]), reversed(sizes[:-1])):
        first, last = spans[-1]
        first, last = (first - 1, last + 1) if name == "conv 3" else (2 * first, 2 * last + 1)
        spans.append((max(first, 0), min(last, size - 1)))  # a conv widens by one each side; a pool doubles
    spans.reverse()  # spans[d]: the cells of layer d
    figure, axes = plt.subplots(figsize=(9, 3.4))
    axes.set_xlim(-2.5, 16)
    axes.set_ylim(-0.4, len(layers))
    axes.axis("off")
    for depth, (name, size, (first, last)) in enumerate(zip(layers, sizes, spans)):
        width = 16 / size  # a pooled layer's cell covers 2, then 4 inputs
        for i in range(size):
            axes.add_patch(plt.Rectangle((i * width, depth), width, 0.8, edgecolor="#555555",
                                         facecolor="#f8b34a" if first <= i <= last else "white"))
        axes.text(-0.3, depth + 0.4, name, ha="right", va="center")
    first, last = spans[0]
    axes.set_title(f"One output of the last pool (top) depends on the orange cells below: inputs {first} to {last}, "
                   f"{last - first + 1} of 16")
    return _save(figure, folder, "explain_receptive_field")


def make_all(folder: Path = IMAGES) -> list[Path]:
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [draw(plt, folder) for draw in (conv_sliding, conv_channels, im2col_picture, maxpool_picture,
                                            shapes_picture, backward_picture, receptive_field_picture)]
    plt.close("all")
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else IMAGES
    for written in make_all(target):
        print(written)
