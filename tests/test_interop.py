"""tf.onnx and tf.safetensors: every layer exported and run by ONNX Runtime, imports that give the same model,
unsupported operations named, PyTorch's weights and a PyTorch-exported residual network brought in, and the
transfer recipe (examples/transfer_video.py) run end to end."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py

import numpy as np
import pytest

import tinyflux as tf
from tinyflux import nn

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'tinyflux[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def make_model(graph):
    """A hand-built model at tinyflux's opset and IR version: onnx's newest IR version can be newer than
    what the installed onnxruntime reads."""
    helper = onnx.helper
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", tf.onnx.OPSET)],
                             ir_version=tf.onnx.IR_VERSION)


def run_in_onnxruntime(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def layer_models():
    """(name, model, one example's shape): every layer and activation, in 1-D, 2-D and 3-D."""
    tf.seed(0)
    cases = []
    for d, size in ((1, (12,)), (2, (10, 12)), (3, (6, 8, 8))):
        k = (3,) * d
        cases += [
            (f"conv{d}d-pad-stride", nn.Chain(nn.Conv(k, 2, 3, tf.relu, stride=2, pad=1), nn.flatten), (2, *size)),
            (f"conv{d}d-maxpool", nn.Chain(nn.Conv(k, 2, 3, pad=1), nn.MaxPool((2,) * d), nn.flatten), (2, *size)),
            (f"maxpool{d}d-stride", nn.Chain(nn.MaxPool((3,) * d, stride=2), nn.flatten), (2, *size)),
            (f"global-mean{d}d", nn.Chain(nn.Conv(k, 2, 4, tf.relu), nn.GlobalMeanPool(), nn.Dense(4, 3)),
             (2, *size)),
            (f"batchnorm-avgpool{d}d", nn.Chain(nn.Conv(k, 2, 4, pad=1), nn.BatchNorm(4, tf.relu),
                                                nn.AvgPool((2,) * d), nn.flatten), (2, *size)),
            (f"instancenorm{d}d", nn.Chain(nn.InstanceNorm(2), nn.Conv(k, 2, 3, pad=1), nn.flatten), (2, *size)),
        ]
    cases += [("dropout", nn.Chain(nn.flatten, nn.Dense(12, 5, tf.relu), nn.Dropout(0.5), nn.Dense(5, 3)), (12,)),
              ("dense-softmax", nn.Chain(nn.flatten, nn.Dense(12, 5, tf.relu), nn.Dense(5, 4), tf.softmax), (12,)),
              ("dense-log-softmax", nn.Chain(nn.Dense(6, 4), tf.log_softmax), (6,)),
              ("mnist", tf.models.mnist_convnet(), (1, 28, 28)),
              ("video", tf.models.video_convnet(in_channels=3, classes=4, frames=8, size=(16, 16)), (3, 8, 16, 16)),
              ("video-bn", tf.models.video_bn_net(3, 4), (3, 8, 64, 64))]
    return cases


@pytest.mark.parametrize("name, model, shape", layer_models(), ids=[case[0] for case in layer_models()])
def test_every_layer_exports_runs_in_onnxruntime_and_imports_back(tmp_path, name, model, shape):
    rng = np.random.default_rng(2)
    for _, buffer in model.named_buffers():  # running statistics that are not the identity
        if buffer.data.dtype.kind == "f":
            buffer.data[...] = rng.uniform(0.5, 1.5, buffer.shape)
    model.eval()  # an export is for inference: running statistics, no dropout
    path = tf.onnx.export(model, tmp_path / f"{name}.onnx", shape)
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)  # a batch of 3: the axis is free
    expected = model(tf.Tensor(x)).data
    np.testing.assert_allclose(run_in_onnxruntime(path, x), expected, rtol=1e-5, atol=1e-5)
    proto = onnx.load(path)
    assert proto.ir_version == tf.onnx.IR_VERSION == 8 and proto.opset_import[0].version == tf.onnx.OPSET == 13
    back = tf.onnx.load(path)
    shown = re.sub(r"  Dropout\([0-9.]+\),\n", "", repr(model))  # dropout does nothing at inference: not exported
    if "AdaptiveMeanPool" in shown:  # exported as the AveragePool of the exported size, and read back as one
        shown = shown.replace("AdaptiveMeanPool((1, 2, 2))", "AvgPool((1, 4, 4))")
    assert repr(back) == shown and not back.training
    np.testing.assert_array_equal(back(tf.Tensor(x)).data, expected)


def test_clip_length_and_size_stay_free_where_the_model_allows(tmp_path):
    tf.seed(0)
    free = nn.Chain(nn.Conv((3, 3, 3), 3, 4, tf.relu, pad=1), nn.MaxPool((2, 2, 2)), nn.GlobalMeanPool(),
                    nn.Dense(4, 2))
    tf.onnx.export(free, tmp_path / "free.onnx", (3, 8, 16, 16))
    assert tf.onnx.input_shape(tmp_path / "free.onnx") == ("N", 3, "S1", "S2", "S3")
    longer = np.random.default_rng(0).random((2, 3, 12, 20, 24), dtype=np.float32)  # not the size exported
    np.testing.assert_allclose(run_in_onnxruntime(tmp_path / "free.onnx", longer), free(tf.Tensor(longer)).data,
                               rtol=1e-5, atol=1e-6)
    for fixed in (tf.models.video_convnet(3, 4, 8, (16, 16)), tf.models.video_bn_net(3, 4)):  # Dense on a flatten;
        tf.onnx.export(fixed, tmp_path / "fixed.onnx", (3, 8, 16, 16))                        # quarter means
        assert tf.onnx.input_shape(tmp_path / "fixed.onnx") == ("N", 3, 8, 16, 16)
        (tmp_path / "fixed.onnx").unlink()


def test_an_adaptive_pooling_whose_cells_overlap_is_refused_naming_the_size(tmp_path):
    model = nn.Chain(nn.AdaptiveMeanPool((2, 2)), nn.flatten)
    tf.onnx.export(model, tmp_path / "even.onnx", (3, 6, 4))
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(run_in_onnxruntime(tmp_path / "even.onnx", x), model(tf.Tensor(x)).data, rtol=1e-6)
    with pytest.raises(ValueError, match=r"AdaptiveMeanPool\(\(2, 2\)\) on inputs of size \(5, 4\)"):
        tf.onnx.export(model, tmp_path / "odd.onnx", (3, 5, 4))
    assert not (tmp_path / "odd.onnx").exists()


def test_what_has_no_onnx_form_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="has no ONNX form in tinyflux"):
        tf.onnx.export(nn.Chain(nn.flatten, lambda x: x * 2), tmp_path / "x.onnx", (4,))
    helper = onnx.helper
    node = helper.make_node("LeakyRelu", ["input"], ["output"], name="leaky_7")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 4])])
    onnx.save(make_model(graph), tmp_path / "leaky.onnx")
    with pytest.raises(tf.onnx.OnnxImportError, match="the LeakyRelu node leaky_7 has no tinyflux form"):
        tf.onnx.load(tmp_path / "leaky.onnx")


def test_a_residual_network_exported_by_pytorch_imports_as_a_graph_and_trains():
    """Conv with batch norm folded in by PyTorch, a max-pool that pads, an Add, global pooling, a dense layer."""
    model = tf.onnx.load(DATA / "torch_resnet_block.onnx")
    io = np.load(DATA / "torch_resnet_block_io.npz")
    assert isinstance(model, tf.onnx.Graph)
    np.testing.assert_allclose(model(tf.Tensor(io["x"])).data, io["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run_in_onnxruntime(DATA / "torch_resnet_block.onnx", io["x"]), io["y"], atol=1e-5)
    step = tf.train.Step(model, tf.logit_cross_entropy, tf.optim.Adam(model.parameters(), lr=1e-2))
    losses = [float(step(io["x"], np.arange(4))) for _ in range(5)]
    assert losses[-1] < losses[0]  # gradients flow through the branches


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_a_3d_resnet_exported_by_pytorch_both_ways_imports_and_fine_tunes(exporter):
    """tests/data/make_torch_video_fixture.py: torchvision's video ResNets in small (a (3, 7, 7) stem with stride
    (1, 2, 2), residual blocks, one with stride 2 and a 1x1x1 shortcut, one of (2+1)-D convolutions); the
    legacy exporter writes GlobalAveragePool and Flatten, the dynamo one (opset 18+) ReduceMean and Reshape."""
    path = DATA / f"torch_video_resnet_{exporter}.onnx"
    io = np.load(DATA / "torch_video_resnet_io.npz")
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert {"ReduceMean", "Reshape"} <= ops if exporter == "dynamo" else {"GlobalAveragePool", "Flatten"} <= ops
    model = tf.onnx.load(path)
    np.testing.assert_allclose(model(tf.Tensor(io["x"])).data, io["y"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run_in_onnxruntime(path, io["x"]), io["y"], rtol=1e-4, atol=1e-5)
    frozen = {name: tensor.data.copy() for name, tensor in model.named_parameters()}
    model.train()
    step = tf.train.Step(model, tf.logit_cross_entropy, tf.optim.Adam(model.parameters(), lr=1e-2))
    losses = [float(step(io["x"], np.arange(2))) for _ in range(5)]
    assert losses[-1] < losses[0]  # fine-tuning moves the loss: gradients reach every Conv through the branches
    assert all(not np.array_equal(frozen[name], tensor.data) for name, tensor in model.named_parameters())


def test_onnx_max_pool_without_strides_moves_one_position_at_a_time(tmp_path):
    """ONNX's default stride is 1, not the window."""
    helper = onnx.helper
    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("MaxPool", ["input"], ["output"], kernel_shape=[2, 2], name="pool")],
                              "g", [value("input", onnx.TensorProto.FLOAT, ["N", 1, 4, 5])],
                              [value("output", onnx.TensorProto.FLOAT, ["N", 1, 3, 4])])
    onnx.save(make_model(graph), tmp_path / "pool.onnx")
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 5)).astype(np.float32)
    model = tf.onnx.load(tmp_path / "pool.onnx")
    assert repr(model.layers[0]) == "MaxPool((2, 2), stride=1)"
    np.testing.assert_array_equal(model(tf.Tensor(x)).data, run_in_onnxruntime(tmp_path / "pool.onnx", x))


def test_batch_normalization_imports_as_a_batch_norm_layer(tmp_path):
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "scale": rng.uniform(0.5, 2, 3),
               "offset": rng.uniform(-1, 1, 3), "mean": rng.uniform(-1, 1, 3), "var": rng.uniform(0.5, 2, 3)}
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "offset", "mean", "var"], ["b"], name="bn"),
             helper.make_node("Relu", ["b"], ["output"], name="relu")]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [value("input", onnx.TensorProto.FLOAT, ["N", 2, 5, 5])],
                              [value("output", onnx.TensorProto.FLOAT, ["N", 3, 5, 5])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()])
    path = tmp_path / "bn.onnx"
    onnx.save(make_model(graph), path)
    model = tf.onnx.load(path)
    assert repr(model[0]).startswith("Conv((3, 3), 2 => 3, pad=1)") and repr(model[1]).startswith("BatchNorm(3, relu)")
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(model(tf.Tensor(x)).data, run_in_onnxruntime(path, x), rtol=1e-5, atol=1e-5)


# -- safetensors --------------------------------------------------------------------------------------------
def test_safetensors_round_trip_is_bit_identical(tmp_path):
    model = tf.models.mnist_convnet()
    tf.safetensors.save(tmp_path / "w.safetensors", model)
    tf.seed(5)
    other = tf.models.mnist_convnet()
    tf.safetensors.load(tmp_path / "w.safetensors", other)
    assert all(a.data.tobytes() == b.data.tobytes() for a, b in zip(model.parameters(), other.parameters()))
    with pytest.raises(ValueError, match="does not fit the model"):
        tf.safetensors.load(tmp_path / "w.safetensors", tf.models.video_convnet())


def torch_small_in_tinyflux():
    return nn.Chain(nn.Conv((3, 3), 1, 4, tf.relu, pad=1), nn.MaxPool((2, 2)), nn.Conv((3, 3), 4, 8, tf.relu, pad=1),
                    nn.MaxPool((2, 2)), nn.flatten, nn.Dense(32, 3))


def test_a_pytorch_state_dict_loads_by_order_and_shape_and_gives_pytorchs_outputs():
    model = torch_small_in_tinyflux()
    pairs = tf.load_state_dict(model, DATA / "torch_small.safetensors")
    assert pairs == [("0.weight", "0.weight"), ("0.bias", "0.bias"), ("3.weight", "2.weight"), ("3.bias", "2.bias"),
                     ("7.weight", "5.weight"), ("7.bias", "5.bias")]  # PyTorch's ReLU modules shift its indices
    io = np.load(DATA / "torch_small_io.npz")
    np.testing.assert_allclose(model(tf.Tensor(io["x"])).data, io["y"], rtol=1e-5, atol=1e-5)


def test_a_state_dict_that_does_not_fit_is_refused_with_both_sides():
    model = nn.Chain(nn.Conv((3, 3), 1, 4, tf.relu, pad=1), nn.flatten, nn.Dense(256, 3))
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"(?s)does not fit the model by order and shape \(6 weights and biases "
                                         r"against 4\).*3.weight .*\(8, 4, 3, 3\).*\| 2.weight"):
        tf.load_state_dict(model, DATA / "torch_small.safetensors")
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))  # nothing changed


def torch_encdec_in_tinyflux():
    def block(activation=tf.relu):
        return [nn.Conv((3, 3), 4, 4, pad=1), nn.BatchNorm(4, activation)]
    return nn.Chain(*block(), *block(), *block(), nn.Conv((3, 3), 4, 4, pad=1), nn.flatten, nn.Dense(4 * 6 * 6, 3))


def test_a_state_dict_with_words_in_its_names_is_refused_without_its_module_order():
    model = torch_encdec_in_tinyflux()
    before = [t.data.copy() for t in model.parameters()]
    with pytest.raises(ValueError, match=r"does not keep the order.*decoder\.0\.bias.*order=list"):
        tf.load_state_dict(model, DATA / "torch_encdec.safetensors")
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("given", ["order", "mapping"])
def test_a_state_dict_with_batch_norm_and_same_shape_layers_gives_pytorchs_outputs(given):
    io = np.load(DATA / "torch_encdec_io.npz")
    order = [str(name) for name in io["order"]]
    model = torch_encdec_in_tinyflux()
    if given == "order":
        pairs = tf.load_state_dict(model, DATA / "torch_encdec.safetensors", order=order)
    else:
        arrays = tf.safetensors._read(DATA / "torch_encdec.safetensors")
        pairs = tf.load_state_dict(model, {name: arrays[name] for name in order})
    assert pairs[0] == ("encoder.0.weight", "0.weight") and pairs[8] == ("decoder.0.weight", "4.weight")
    assert ("encoder.1.running_mean", "1.running_mean") in pairs and ("decoder.1.running_var", "5.running_var") in pairs
    assert not np.allclose(model[1].running_mean.data, 0)  # the statistics came with the weights
    np.testing.assert_allclose(model.eval()(tf.Tensor(io["x"])).data, io["y"], rtol=1e-5, atol=1e-5)


def test_an_order_that_leaves_out_a_name_is_refused():
    order = [str(name) for name in np.load(DATA / "torch_encdec_io.npz")["order"]]
    with pytest.raises(ValueError, match="order= does not name head.bias"):
        tf.load_state_dict(torch_encdec_in_tinyflux(), DATA / "torch_encdec.safetensors", order=order[:-1])


def test_safetensors_keep_batch_norm_statistics_and_warn_of_nan(tmp_path):
    model = torch_encdec_in_tinyflux()
    model[1].running_mean.data[...] = np.arange(4)
    model[3].running_var.data[...] = 7
    tf.safetensors.save(tmp_path / "w.safetensors", model)
    other = torch_encdec_in_tinyflux()
    tf.safetensors.load(tmp_path / "w.safetensors", other)
    assert all(a.data.tobytes() == b.data.tobytes() for (_, a), (_, b) in zip(model.named_buffers(),
                                                                              other.named_buffers()))
    import safetensors.numpy
    arrays = {name: t.data for name, t in model.named_parameters()}  # as an older tinyflux wrote it
    (tmp_path / "old.safetensors").write_bytes(safetensors.numpy.save(arrays))
    with pytest.warns(UserWarning, match="holds no running statistics.*1.running_mean"):
        tf.safetensors.load(tmp_path / "old.safetensors", torch_encdec_in_tinyflux())
    arrays.update({name: t.data for name, t in model.named_buffers()})
    arrays["0.weight"] = np.full_like(arrays["0.weight"], np.nan)
    (tmp_path / "nan.safetensors").write_bytes(safetensors.numpy.save(arrays))
    with pytest.warns(RuntimeWarning, match="NaN or infinity in 0.weight"):
        tf.safetensors.load(tmp_path / "nan.safetensors", torch_encdec_in_tinyflux())


def test_both_examples_export_their_saved_model(examples, fake_mnist, tmp_path):
    mnist = examples("mnist_conv")
    args = mnist.Args(epochs=1, batch_size=16, max_steps=2, data_dir=str(fake_mnist), savepath=str(tmp_path / "m"),
                      device="cpu")
    mnist.train(args)
    exported = mnist.parse_args(["--savepath", str(tmp_path / "m"), "--export-onnx", str(tmp_path / "m.onnx"),
                                 "--device", "cpu"])
    mnist.main(exported)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(run_in_onnxruntime(tmp_path / "m.onnx", x),
                               mnist.load_best_model(args)(tf.Tensor(x)).data, rtol=1e-5, atol=1e-5)
    video = examples("video_conv")
    flags = ["--frames", "8", "--size", "24", "--train-clips", "8", "--test-clips", "4", "--data-dir", str(fake_mnist),
             "--savepath", str(tmp_path / "v"), "--device", "cpu"]
    video.main(video.parse_args(flags + ["--epochs", "1", "--batch-size", "4"]))
    video.main(video.parse_args(flags + ["--export-onnx", str(tmp_path / "v.onnx")]))
    clips = np.random.default_rng(1).random((2, 1, 8, 24, 24), dtype=np.float32)
    np.testing.assert_allclose(run_in_onnxruntime(tmp_path / "v.onnx", clips),
                               video.load_best_model(video.parse_args(flags))(tf.Tensor(clips)).data,
                               rtol=1e-5, atol=1e-5)


def test_export_and_predictions_never_replace_an_existing_file(examples, fake_mnist, tmp_path):
    mnist = examples("mnist_conv")
    args = mnist.Args(epochs=1, batch_size=16, max_steps=1, data_dir=str(fake_mnist), savepath=str(tmp_path / "m"),
                      device="cpu")
    mnist.train(args)
    checkpoint = tmp_path / "m" / "mnist_conv.h5"
    before = checkpoint.read_bytes()
    exported = mnist.parse_args(["--savepath", str(tmp_path / "m"), "--export-onnx", str(checkpoint)])
    with pytest.raises(tf.train.RunFolderError, match="the file exists; give a new name"):
        mnist.main(exported)
    assert checkpoint.read_bytes() == before
    with pytest.raises(tf.train.RunFolderError, match="--out .* the file exists"):
        tf.predict.write_csv(checkpoint, ["a"], [[1]])
    assert checkpoint.read_bytes() == before


def one_node_model(tmp_path, op, input_shape, output_shape, **attributes):
    helper = onnx.helper
    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node(op, ["input"], ["output"], name=op.lower(), **attributes)], "g",
                              [value("input", onnx.TensorProto.FLOAT, input_shape)],
                              [value("output", onnx.TensorProto.FLOAT, output_shape)])
    path = tmp_path / f"{op}.onnx"
    onnx.save(make_model(graph), path)
    return path


def test_flatten_and_softmax_follow_onnx_axes_and_defaults(tmp_path):
    """Flatten(axis=-1) keeps the last axis apart; Softmax without an axis works along the last one from opset 13
    (neither is axis 1 there)."""
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 4)).astype(np.float32)
    flatten = one_node_model(tmp_path, "Flatten", [2, 2, 3, 4], [12, 4], axis=-1)
    np.testing.assert_array_equal(tf.onnx.load(flatten)(tf.Tensor(x)).data, run_in_onnxruntime(flatten, x))
    scores = x.reshape(2, 24)
    softmax = one_node_model(tmp_path, "Softmax", ["N", 24], ["N", 24])  # no axis: -1 at opset 13
    np.testing.assert_allclose(tf.onnx.load(softmax)(tf.Tensor(scores)).data, run_in_onnxruntime(softmax, scores),
                               rtol=1e-6)
    over_last = one_node_model(tmp_path, "LogSoftmax", [2, 2, 3, 4], [2, 2, 3, 4])
    with pytest.raises(tf.onnx.OnnxImportError, match="LogSoftmax along axis -1 of a 4-D value"):
        tf.onnx.load(over_last)(tf.Tensor(x))


def test_batch_normalization_in_training_mode_is_refused(tmp_path):
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    names = ["scale", "offset", "mean", "var"]
    node = helper.make_node("BatchNormalization", ["input", *names], ["output"], name="bn", training_mode=1)
    value = helper.make_tensor_value_info
    graph = helper.make_graph([node], "g", [value("input", onnx.TensorProto.FLOAT, ["N", 3, 4])],
                              [value("output", onnx.TensorProto.FLOAT, ["N", 3, 4])],
                              [numpy_helper.from_array(np.ones(3, np.float32), name) for name in names])
    path = tmp_path / "bn.onnx"
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], producer_name="test")
    proto.ir_version = 8
    onnx.save(proto, path)
    with pytest.raises(tf.onnx.OnnxImportError, match="BatchNormalization node bn has training_mode=1"):
        tf.onnx.load(path)


def test_safetensors_in_bfloat16_load_as_the_same_values_in_float32(tmp_path):
    values = np.array([[1.5, -2.0], [0.15625, 2.0**100]], np.float32)  # each exact in bfloat16's 8 mantissa bits
    upper_halves = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"weight": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
                         "bias": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}).encode()
    (tmp_path / "bf16.safetensors").write_bytes(np.uint64(len(header)).tobytes() + header + upper_halves +
                                                np.array([0.5, -0.5], "<f4").tobytes())
    layer = nn.Dense(2, 2)
    tf.safetensors.load(tmp_path / "bf16.safetensors", layer)
    np.testing.assert_array_equal(layer.weight.data, values)
    np.testing.assert_array_equal(layer.bias.data, [0.5, -0.5])


@pytest.mark.parametrize("write", ["onnx", "safetensors"])
def test_a_failed_write_names_the_file_and_the_cause_and_leaves_nothing(tmp_path, monkeypatch, write):
    model = nn.Chain(nn.flatten, nn.Dense(4, 2))

    def save(path):
        if write == "onnx":
            pytest.importorskip("onnx")
            return tf.onnx.export(model, path, (1, 2, 2))
        return tf.safetensors.save(path, model)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(tf.files.WriteError, match=r"a_file/m.out: cannot write the .* there: .*a_file is a file"):
        save(tmp_path / "a_file" / "m.out")
    with pytest.raises(tf.files.WriteError, match=r"is a folder; give the .* a file name"):
        save(tmp_path)
    (tmp_path / "m.out").write_text("the earlier file")

    def disk_full(source, target):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(tf.files.WriteError, match=r"m.out: could not write the .*: No space left on device "
                                                  r"\(OSError\); any earlier file under that name is unchanged"):
        save(tmp_path / "m.out")
    assert (tmp_path / "m.out").read_text() == "the earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "m.out"]  # no temporary file left
