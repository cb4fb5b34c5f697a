"""Pretrained networks under a trained head (tinyflux/nn/frozen.py, examples/transfer_video.py): features per frame
averaged or kept in order, whole-clip features of a 3-D network, the feature cache, frozen and fine-tuned backbones."""
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import tinyflux as tf
from tinyflux import nn

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


class Counting(nn.Module):
    """An image or video model that counts the examples it has been run on."""

    def __init__(self, model):
        self.model, self.seen = model, 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.model(x)


def image_model():
    tf.seed(0)
    return nn.Chain(nn.Conv((3, 3), 3, 4, tf.relu, pad=1), nn.GlobalMeanPool())


def test_frame_features_average_or_keep_the_frames_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path))
    model = image_model()
    clips = np.random.default_rng(0).random((2, 3, 5, 6, 6), dtype=np.float32)
    per_frame = np.stack([model(tf.Tensor(clips[:, :, t])).data for t in range(5)], axis=-1)  # (N, F, T)
    np.testing.assert_allclose(nn.FrameFeatures(model)(clips).data, per_frame.mean(axis=-1), rtol=1e-6)
    kept = nn.FrameFeatures(model, over_time="keep")(clips).data
    np.testing.assert_allclose(kept, per_frame, rtol=1e-6)
    backwards = nn.FrameFeatures(model, over_time="keep")(clips[:, :, ::-1]).data
    np.testing.assert_allclose(backwards, per_frame[..., ::-1], rtol=1e-6)  # the order is what tells them apart
    features = nn.FrameFeatures(model)
    assert features.parameters() == [] and nn.Chain(features, nn.Dense(4, 2)).num_parameters() == 10
    with pytest.raises(ValueError, match="over_time must be 'mean' or 'keep'"):
        nn.FrameFeatures(model, over_time="max")


def test_features_are_computed_once_and_kept_with_a_checksum(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path))
    counting = Counting(image_model())
    clips = np.random.default_rng(1).random((3, 3, 4, 6, 6), dtype=np.float32)
    first = nn.FrameFeatures(counting)(clips).data
    assert counting.seen == 12  # 3 clips of 4 frames
    again = nn.FrameFeatures(counting)  # a new layer: the features come from the disk
    np.testing.assert_array_equal(again(clips).data, first)
    np.testing.assert_array_equal(again(clips[::-1]).data, first[::-1])  # by clip, in any order
    assert counting.seen == 12
    files = sorted((tmp_path / "features").glob("*.npz"))
    assert len(files) == 3
    with np.load(files[0]) as stored:
        damaged = {"features": stored["features"] + 1, "sha256": stored["sha256"]}
    np.savez(files[0], **damaged)  # np.savez adds nothing to a name that ends in .npz
    fresh = nn.FrameFeatures(counting)
    np.testing.assert_array_equal(fresh(clips).data, first)  # recomputed, never the damaged values
    assert counting.seen == 16 and "fail their checksum" in caplog.text
    counting.model[0].weight.data[0] += 1  # another network: other features, computed anew
    assert not np.allclose(nn.FrameFeatures(counting)(clips).data, first)
    assert counting.seen == 28
    nn.FrameFeatures(counting, cache=False)(clips)
    assert counting.seen == 40 and len(list((tmp_path / "features").glob("*.npz"))) == 6


def test_clip_features_of_a_3d_network_imported_from_pytorch(monkeypatch, tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'tinyflux[onnx]')")
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path))
    io = np.load(DATA / "torch_video_resnet_io.npz")
    network = tf.onnx.load(DATA / "torch_video_resnet_dynamo.onnx")
    assert tf.onnx.input_shape(DATA / "torch_video_resnet_dynamo.onnx")[1:] == (3, 8, 24, 24)
    features = nn.ClipFeatures(network)
    np.testing.assert_allclose(features(io["x"]).data, io["y"], rtol=1e-4, atol=1e-5)
    mean, std = np.array([0.4, 0.4, 0.4], np.float32), np.array([0.2, 0.2, 0.2], np.float32)
    normalised = nn.ClipFeatures(network, mean, std)(io["x"]).data
    np.testing.assert_allclose(normalised, network(tf.Tensor((io["x"] - 0.4) / 0.2)).data, rtol=1e-4, atol=1e-5)


def run_transfer(tmp_path, backbone, clips, *flags):
    command = [sys.executable, str(ROOT / "examples" / "transfer_video.py"), "--backbone", str(backbone),
               "--video-dir", str(clips), "--epochs", "3", "--batch-size", "4", "--device", "cpu", "--lr", "3e-3",
               "--savepath", str(tmp_path / "run"), "--force", *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TINYFLUX_DATA": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert "accuracy(test_set, model) = " in done.stdout
    with h5py.File(tmp_path / "run" / "transfer.h5") as f:
        return sorted(f["parameters"]), [float(line.rsplit(" ", 1)[1]) for line in done.stderr.splitlines()
                                         if "mean training loss" in line]


@pytest.mark.parametrize("head", ["mean", "frames"])
def test_the_transfer_example_trains_a_head_on_a_frozen_image_backbone(tmp_path, examples, head):
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'tinyflux[onnx]')")
    tf.seed(3)  # a small "pretrained" image network: no weights can be downloaded here
    backbone = nn.Chain(nn.Conv((3, 3), 3, 4, tf.relu, pad=1), nn.MaxPool((2, 2)), nn.Conv((3, 3), 4, 8, tf.relu),
                        nn.GlobalMeanPool())
    tf.onnx.export(backbone, tmp_path / "backbone.onnx", (3, 16, 16))
    clips = examples("make_shape_clips").make_set(tmp_path / "clips", train=8, test=4, frames=4, height=16, width=16)
    names, losses = run_transfer(tmp_path, tmp_path / "backbone.onnx", clips, "--frames", "4", "--size", "16",
                                 "--head", head)
    assert names == (["1.bias", "1.weight"] if head == "mean" else ["1.bias", "1.weight", "3.bias", "3.weight"])
    assert len(losses) == 3  # the head alone is saved: the backbone stays frozen


def test_the_transfer_example_on_a_3d_backbone_frozen_and_fine_tuned(tmp_path, examples):
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'tinyflux[onnx]')")
    clips = examples("make_shape_clips").make_set(tmp_path / "clips", train=8, test=4, frames=8, height=24, width=24)
    backbone = DATA / "torch_video_resnet_legacy.onnx"  # (B, 3, 8, 24, 24) -> 5 scores, PyTorch's random weights
    frozen, _ = run_transfer(tmp_path, backbone, clips, "--frames", "8", "--size", "24", "--kinetics")
    assert frozen == ["1.bias", "1.weight"]
    tuned, losses = run_transfer(tmp_path, backbone, clips, "--frames", "8", "--size", "24", "--kinetics",
                                 "--fine-tune")
    assert len(tuned) > 10 and any(name.startswith("0.1.") for name in tuned)  # the backbone's weights are saved
    original = {init.name: onnx.numpy_helper.to_array(init) for init in onnx.load(backbone).graph.initializer}
    with h5py.File(tmp_path / "run" / "transfer.h5") as f:
        changed = [name for name in tuned if name.startswith("0.1.") and
                   not np.array_equal(f["parameters"][name][()], original[name[len("0.1."):]])]
    assert len(changed) == len([name for name in tuned if name.startswith("0.1.")])  # and trained, every one
    assert min(losses[1:]) < losses[0], losses
