"""`nlphub.embeddings.onnx_graph`: the plain layer normalizations compute what ONNX Runtime's
fused kernels do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nlphub.embeddings.onnx as onnx_backend
from nlphub.embeddings.onnx_graph import plain_layer_norms


@pytest.mark.parametrize("opset", [17, 18])
def test_plain_layer_norms_compute_what_the_fused_kernels_do(tmp_path: Path, opset: int) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    hidden, rng = 8, np.random.default_rng(0)
    weights = {
        name: numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), name)
        for name in ("gamma", "beta", "bias", "gamma2")
    }
    weights["gamma_2d"] = numpy_helper.from_array(
        rng.normal(size=(5, hidden)).astype(np.float32), "gamma_2d"
    )
    nodes = [
        helper.make_node(
            "SkipLayerNormalization",
            ["x", "skip", "gamma", "beta", "bias"],
            ["normed", "", "", "summed"],
            domain="com.microsoft",
            epsilon=1e-12,
        ),
        helper.make_node("Add", ["normed", "summed"], ["mixed"]),
        helper.make_node("LayerNormalization", ["mixed", "gamma2"], ["y"], axis=-1, epsilon=1e-5),
        # Its mean output is used: left fused.
        helper.make_node("LayerNormalization", ["x", "gamma"], ["z", "z_mean"], axis=-1),
        # Over the last two axes, not the last one: left fused.
        helper.make_node("LayerNormalization", ["x", "gamma_2d"], ["w"], axis=1),
    ]

    def value(name: str) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["b", "s", hidden])

    stats = helper.make_tensor_value_info("z_mean", TensorProto.FLOAT, ["b", "s", 1])
    graph = helper.make_graph(
        nodes,
        "norms",
        [value("x"), value("skip")],
        [value("y"), value("summed"), value("z"), stats, value("w")],
        list(weights.values()),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
    )
    file = tmp_path / "norms.onnx"
    onnx.save(model, str(file))
    feed = {
        "x": rng.normal(size=(2, 5, hidden)).astype(np.float32) * 3,
        "skip": rng.normal(size=(2, 5, hidden)).astype(np.float32),
    }
    fused = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"]).run(None, feed)

    assert plain_layer_norms(file) == 2
    ops = [node.op_type for node in onnx.load(str(file)).graph.node]
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 2
    plain = onnx_backend._open_session(file, 1).run(None, feed)
    for got, expected in zip(plain, fused, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
