"""tf.onnx.load against ONNX's own node tests: every case of every operator it claims is imported right or refused.

onnx's wheel carries the generators of its backend node tests
(``onnx.backend.test.case.node``): for each operator, one-node models that
exercise its attributes, the defaults included, with inputs and the outputs
ONNX's reference computes. tinyflux imports models, not single operators, and
takes its weights from initializers, so every input but the first is made a
constant with the case's own value. Each case must then give the expected
output, or be refused with an OnnxImportError that says why. A wrong answer,
or any other exception, fails; and every claimed operator must get some case
right, so that refusing everything cannot pass.
"""
import importlib

import numpy as np
import pytest

import tinyflux as tf

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'tinyflux[onnx]')")
node_cases = pytest.importorskip("onnx.backend.test.case.node", reason="this onnx has no node test generators")

# The generator modules of the operators in tf.onnx.SUPPORTED (a module may also hold other operators' cases).
MODULES = ("conv", "relu", "maxpool", "gemm", "flatten", "softmax", "logsoftmax", "globalaveragepool", "averagepool",
           "batch_normalization", "instance_normalization", "add", "dropout", "identity", "reducemean", "reshape")


def collect_cases() -> list:
    node_cases._TargetOpType = None  # every operator's cases (collect_testcases(op) filters on its first call only)
    for module in MODULES:
        importlib.import_module(f"onnx.backend.test.case.node.{module}")
    return [case for case in node_cases._NodeTestCases
            if {node.op_type for node in case.model.graph.node} & set(tf.onnx.SUPPORTED)]


CASES = collect_cases()


def with_constants(model, inputs):
    """The model with every graph input after the first turned into an initializer holding the case's value."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    first, *others = graph.input
    for value, array in zip(others, inputs[1:]):
        graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(array), value.name))
    del graph.input[:]
    graph.input.append(first)
    return model


def outcome(case, tmp_path) -> str:
    """"right", or "refused: why", for each of the case's data sets; raises AssertionError on a wrong answer."""
    for inputs, outputs in case.data_sets:
        path = tmp_path / f"{case.name}.onnx"
        onnx.save(with_constants(case.model, inputs), str(path))
        try:
            model = tf.onnx.load(path)
            got = model(tf.Tensor(np.asarray(inputs[0]))).data
        except tf.onnx.OnnxImportError as error:
            return f"refused: {error}"
        expected = np.asarray(outputs[0])
        assert got.shape == expected.shape, f"{case.name}: shape {got.shape}, ONNX's reference {expected.shape}"
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=case.name)
    return "right"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_node_case_is_imported_right_or_refused(case, tmp_path):
    result = outcome(case, tmp_path)
    assert result == "right" or result.startswith("refused: onnx."), result


def test_every_claimed_operator_gets_cases_right(tmp_path):
    right = {op: 0 for op in tf.onnx.SUPPORTED}
    for case in CASES:
        if len(case.model.graph.node) == 1 and outcome(case, tmp_path) == "right":
            right[case.model.graph.node[0].op_type] += 1
    assert all(right.values()), {op: count for op, count in right.items() if not count}


@pytest.mark.parametrize("content, says", [
    (None, "no such file"), (b"", "the file is empty"), (b"\x08\x07\x12\x04abc", "not a readable ONNX model"),
    ("truncated", "not a readable ONNX model")])
def test_a_missing_empty_or_damaged_file_is_named_with_the_cause(tmp_path, content, says):
    path = tmp_path / "model.onnx"
    if content == "truncated":
        case = next(case for case in CASES if case.name == "test_relu")
        whole = with_constants(case.model, case.data_sets[0][0]).SerializeToString()
        content = whole[:len(whole) // 2]
    if content is not None:
        path.write_bytes(content)
    for read in (tf.onnx.load, tf.onnx.input_shape):
        with pytest.raises(tf.onnx.OnnxImportError, match=f"{path}: {says}"):
            read(path)
