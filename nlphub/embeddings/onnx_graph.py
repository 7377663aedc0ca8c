"""ONNX graph surgery for the ``backend=onnx`` export (`nlphub.embeddings.onnx`): layer
normalizations written back as plain operators, and the feed-forward down-projections found.

Pure functions of an ``.onnx`` file (onnx is imported when called: the ``onnx`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: ONNX Runtime's graph optimizations that would fuse `plain_layer_norms`' operators again:
#: sessions of a rewritten file disable them.
LAYER_NORM_FUSIONS = ["LayerNormFusion", "SimplifiedLayerNormFusion", "SkipLayerNormFusion"]


def plain_layer_norms(file: Path) -> int:
    """Rewrite `file`'s layer normalizations over the last axis (``LayerNormalization`` and
    com.microsoft's ``SkipLayerNormalization``) as plain operators; the number rewritten.

    ``y = (t - mean(t)) / sqrt(var(t) + eps) * gamma + beta`` with ``t = x + skip + bias`` for
    the skip form (its optional sum output is `t`): Add, ReduceMean, Sub, Mul, ReduceMean, Add,
    Sqrt, Div, Mul, Add. ONNX Runtime runs each vectorized; its fused CPU kernel is one scalar
    loop per row (docs/decisions.md, "ONNX: layer normalizations as plain operators").
    A node whose mean or inverse-deviation outputs are used stays as it is."""
    import onnx

    model = onnx.load(str(file))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    rewriter = _Rewriter(graph, opset)
    for node in graph.node:
        parts = _layer_norm_parts(node)
        if parts is None:
            rewriter.nodes.append(node)
        else:
            rewriter.rewrite(node, *parts)
    for i, made in enumerate(rewriter.nodes):
        if not made.name:
            made.name = f"plain_ln_node_{i}"
    del graph.node[:]
    graph.node.extend(rewriter.nodes)
    onnx.save(model, str(file))
    return rewriter.count


def _layer_norm_parts(node: Any) -> tuple[str, str, str, float] | None:
    """(gamma, beta, bias, epsilon) of a layer normalization `plain_layer_norms` rewrites
    (names are "" when absent); None for any other node."""
    from onnx import helper

    inputs = [*node.input, "", "", ""]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "SkipLayerNormalization" and node.domain == "com.microsoft":
        gamma, beta, bias = inputs[2], inputs[3], inputs[4]
    elif node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx"):
        if attrs.get("axis", -1) != -1:
            return None
        gamma, beta, bias = inputs[1], inputs[2], ""
    else:
        return None
    if any(node.output[1:3]):  # its mean or inverse deviation is used
        return None
    return gamma, beta, bias, float(attrs.get("epsilon", 1e-5))


class _Rewriter:
    """The new node list of a graph, and the constants it adds to the graph's initializers."""

    def __init__(self, graph: Any, opset: int) -> None:
        self.graph = graph
        self.opset = opset
        self.taken = {i.name for i in graph.initializer}
        self.nodes: list[Any] = []
        self.count = 0

    def add(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def const(self, name: str, value: float | list[int]) -> str:
        from onnx import numpy_helper

        if name not in self.taken:
            dtype = np.int64 if isinstance(value, list) else np.float32
            array = np.array(value, dtype=dtype)
            self.graph.initializer.append(numpy_helper.from_array(array, name))
            self.taken.add(name)
        return name

    def mean(self, source: str, target: str) -> None:
        if self.opset >= 18:  # axes became an input
            axes = self.const("plain_ln_last_axis", [-1])
            self.add("ReduceMean", [source, axes], [target], keepdims=1)
        else:
            self.add("ReduceMean", [source], [target], axes=[-1], keepdims=1)

    def rewrite(self, node: Any, gamma: str, beta: str, bias: str, epsilon: float) -> None:
        """Append the plain operators computing `node`'s first (and sum) output."""
        self.count += 1
        p = f"plain_ln{self.count}_"
        eps = self.const(f"{p}eps", epsilon)
        t = node.input[0]
        if node.op_type == "SkipLayerNormalization":
            if bias:
                self.add("Add", [t, bias], [f"{p}xb"])
                t = f"{p}xb"
            total = node.output[3] if len(node.output) > 3 and node.output[3] else f"{p}sum"
            self.add("Add", [t, node.input[1]], [total])
            t = total
        self.mean(t, f"{p}mean")
        self.add("Sub", [t, f"{p}mean"], [f"{p}d"])
        self.add("Mul", [f"{p}d", f"{p}d"], [f"{p}d2"])
        self.mean(f"{p}d2", f"{p}var")
        self.add("Add", [f"{p}var", eps], [f"{p}ve"])
        self.add("Sqrt", [f"{p}ve"], [f"{p}sd"])
        self.add("Div", [f"{p}d", f"{p}sd"], [f"{p}n"])
        scaled = f"{p}scaled" if beta else node.output[0]
        self.add("Mul", [f"{p}n", gamma], [scaled])
        if beta:
            self.add("Add", [scaled, beta], [node.output[0]])


def down_projections(file: Path) -> list[str]:
    """The feed-forward down-projections (MatMul by a constant [intermediate, hidden] weight,
    wider than tall), in graph order: layer by layer."""
    import onnx

    graph = onnx.load(str(file), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    out = []
    for node in graph.node:
        dims = (
            shapes.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        )
        if dims is not None and len(dims) == 2 and dims[0] > dims[1]:
            out.append(node.name)
    return out
