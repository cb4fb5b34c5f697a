"""The suspects, measured: video_conv.py's own-clips run with the bn model changed one piece at a time.

    python docs/results/motion/variants.py VARIANT DIR NAME [video_conv.py flags...]

VARIANT is words joined by "-": "old" (no standardisation, one global mean: the model before round 5),
"p122" (first pooling (1, 2, 2), keeping time), "gmax" (a global max instead of the mean), "diff" (frame
differences as three more channels), "center" (each clip minus its mean colour, divided by its standard
deviation), "inorm" (nn.InstanceNorm first), "grid" (a mean per quarter, nn.AdaptiveMeanPool((1, 2, 2))),
"conv4" (a fourth convolution block, without pooling), "d5" (dropout 0.5 instead of 0.3), "noexit" (no early exit at a validation accuracy of
99.9%). The run goes to /tmp/runs/NAME.
"""
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

import tinyflux as tf
from tinyflux import nn
from tinyflux.train import schedule

spec = importlib.util.spec_from_file_location("video_conv", Path(__file__).resolve().parents[3] / "examples" /
                                              "video_conv.py")
video_conv = importlib.util.module_from_spec(spec)
sys.modules["video_conv"] = video_conv
spec.loader.exec_module(video_conv)
variant, data, name, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]


def center(x):  # each clip minus its mean colour, over its whole standard deviation
    d = x.data
    return tf.Tensor((d - d.mean(axis=(2, 3, 4), keepdims=True)) / (d.std(axis=(1, 2, 3, 4), keepdims=True) + 1e-2))


def differences(x):  # (N, 3, T, H, W) -> (N, 6, T, H, W): the frames and their change from the frame before
    d = x.data
    change = np.zeros_like(d)
    change[:, :, 1:] = d[:, :, 1:] - d[:, :, :-1]
    return tf.Tensor(np.concatenate([d, change], axis=1))


def build(in_channels=3, classes=4, width=16, dropout=0.3, standardize=True):
    dropout = 0.5 if "d5" in variant else dropout
    pools = [(1, 2, 2) if "p122" in variant else (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    layers, channels = [], in_channels
    if "inorm" in variant:
        layers.append(nn.InstanceNorm(in_channels))
    if "center" in variant:
        layers.append(center)
    if "diff" in variant:
        layers.append(differences)
        channels = 2 * in_channels
    for out, pool in zip((width, 2 * width, 4 * width), pools):
        layers += [nn.Conv((3, 3, 3), channels, out, pad=1), nn.BatchNorm(out, tf.relu), nn.MaxPool(pool)]
        channels = out
    if "conv4" in variant:  # a fourth block without pooling: a receptive field over most of the picture
        layers += [nn.Conv((3, 3, 3), channels, channels, pad=1), nn.BatchNorm(channels, tf.relu)]
    if "grid" in variant:
        return nn.Chain(*layers, nn.AdaptiveMeanPool((1, 2, 2)), nn.flatten, nn.Dropout(dropout),
                        nn.Dense(channels * 4, classes))
    if "gmax" in variant:  # the whole remaining clip as one window
        frames = video_conv.parse_args(["--video-dir", data] + flags).frames // np.prod([p[0] for p in pools])
        layers += [nn.MaxPool((int(frames), 6, 6)), nn.flatten]
    else:
        layers.append(nn.GlobalMeanPool())
    return nn.Chain(*layers, nn.Dropout(dropout), nn.Dense(channels, classes))


tf.models.video_bn_net = build
if "noexit" in variant:
    tf.train.ModelZoo.__init__.__defaults__ = (5, 10, 10.0, 1e-6, 2.0)  # a target never reached
start = time.time()
args = video_conv.parse_args(["--video-dir", data, "--size", "48", "--val-split", "0.2", "--savepath",
                              f"/tmp/runs/{name}", "--force", *flags])
sys.exit(tf.train.run_command(lambda a: (video_conv.main(a), print(f"TIME {time.time() - start:.0f} s")),
                              tf.train.setup_logging(args)))
