"""torchvision's video networks (r3d_18, mc3_18, r2plus1d_18), randomly initialised, exported to ONNX both ways
and imported by tinyflux: outputs against PyTorch's, and a frozen backbone's features cached against computed
every epoch. Needs PyTorch and torchvision, not dependencies; on these machines torchvision runs beside
torch 2.14.1 (pip install torch==2.14.1 torchvision==0.29.1 onnx onnxscript onnxruntime).
The run of logs/torchvision_video_nets.txt: that environment, tinyflux installed with --no-deps.

    python docs/results/motion/torchvision_video_nets.py OUT_DIR
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import torchvision

import tinyflux as tf


def export(model, x, path, dynamo: bool):
    if dynamo:
        torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["output"],
                          dynamic_shapes=({0: torch.export.Dim("N")},), external_data=False)
    else:
        torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=13, dynamo=False)


def main(out: Path):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 112, 112)
    lines = [f"PyTorch {torch.__version__}, torchvision {torchvision.__version__}, onnxruntime "
             f"{onnxruntime.__version__}; input {tuple(x.shape)}, random weights (no download here)", ""]
    for name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        model = getattr(torchvision.models.video, name)(weights=None, num_classes=400).eval()
        with torch.no_grad():
            expected = model(x).numpy()
        for dynamo in (False, True):
            path = out / f"{name}_{'dynamo' if dynamo else 'legacy'}.onnx"
            export(model, x, path, dynamo)
            start = time.perf_counter()
            imported = tf.onnx.load(path)
            got = imported(tf.Tensor(x.numpy())).data
            seconds = time.perf_counter() - start
            ops = sorted({node[0] for node in imported.nodes}) if hasattr(imported, "nodes") else "a Chain"
            lines.append(f"{name} {'dynamo' if dynamo else 'legacy'}: max |tinyflux - PyTorch| "
                         f"{np.abs(got - expected).max():.2e} (outputs up to {np.abs(expected).max():.2f}); "
                         f"load and forward {seconds:.1f} s; nodes {ops}")
            if name == "r3d_18" and not dynamo:
                lines += cache_timing(imported, x.numpy())
            path.unlink()
    print("\n".join(lines))
    return lines


def cache_timing(network, clips) -> list:
    """Seconds for the features of the same clips, three times, with the cache and without (one epoch each)."""
    lines = []
    for cache in (False, True):
        features = tf.nn.ClipFeatures(network, cache=cache)
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            features(clips)
            seconds.append(time.perf_counter() - start)
        lines.append(f"r3d_18 ClipFeatures on {len(clips)} clips, cache={cache}: " +
                     ", ".join(f"{s:.3f} s" for s in seconds) + " (epochs 1, 2, 3)")
    return lines


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        os.environ["TINYFLUX_DATA"] = folder  # the feature cache starts empty and goes with the folder
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(folder))
