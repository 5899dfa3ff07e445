"""One ONNX embedder that keeps the ImageNet features in view beside a fine-tuned embedding (issue 11).

Fine-tuning on 81 grocery products placed those products better and products it never saw worse
than the ImageNet backbone it started from. Joining the two unit vectors keeps both: the composed
embedding is [sqrt(1 - w) x the fine-tuned embedding, sqrt(w) x the centred ImageNet features], so
the cosine of two embeddings is (1 - w) x the fine-tuned cosine + w x the ImageNet one. The centred
ImageNet features may first be projected onto their leading principal directions over the reference
photos (`basis`): a gallery stores and searches every dimension, and 1280 of them cost ten times
the fine-tuned embedding's 128.

Both inputs are ONNX files of `reid export` with the same preprocessing and flip averaging. The
layers a fine-tuning kept frozen (the stem and first blocks) compute the same thing from the same
weights in both graphs; they are found node by node and run once, so the composed model costs one
network plus the ImageNet backbone's later blocks. Torch-free: onnx and numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import GraphProto, TensorProto, helper, numpy_helper

from retail_reid.errors import ReidError
from retail_reid.models.onnx_file import save_whole, set_info
from retail_reid.models.runtime import OUTPUT_NAME, ModelInfo, OnnxEmbedder


def _free_prefix(graph: GraphProto, stem: str) -> str:
    """`stem/` or `stem2/`, `stem3/`...: a name prefix no tensor or node of `graph` uses yet (a composed
    model can be composed again)."""
    names = {x for node in graph.node for x in (*node.input, *node.output, node.name)}
    names |= {t.name for t in graph.initializer}
    k = 1
    while any(n.startswith(f"{stem}{k if k > 1 else ''}/") for n in names):
        k += 1
    return f"{stem}{k if k > 1 else ''}/"


class ComposeError(ReidError, ValueError):
    """Two models that cannot be composed."""


def _same_input(na: onnx.NodeProto, nb: onnx.NodeProto, a_init: dict, b_init: dict, mapping: dict) -> bool:
    """Whether node nb of B computes what node na of A does: same operator and attributes, and each
    input the same weights or a tensor already shown to be the same."""
    if (na.op_type, na.domain, list(na.attribute)) != (nb.op_type, nb.domain, list(nb.attribute)):
        return False
    if len(na.input) != len(nb.input) or len(na.output) != len(nb.output):
        return False
    for xa, xb in zip(na.input, nb.input, strict=True):
        if xa in a_init and xb in b_init:
            if not np.array_equal(numpy_helper.to_array(a_init[xa]), numpy_helper.to_array(b_init[xb])):
                return False
        elif mapping.get(xb) != xa:
            return False
    return True


def shared_prefix(a: GraphProto, b: GraphProto) -> tuple[dict[str, str], int]:
    """B's tensors that A computes identically (B name -> A name), walking both graphs' nodes in order
    until the first that differs; and how many nodes that is."""
    a_init = {t.name: t for t in a.initializer}
    b_init = {t.name: t for t in b.initializer}
    mapping = {b.input[0].name: a.input[0].name, "": ""}
    n = 0
    for na, nb in zip(a.node, b.node, strict=False):  # stops at the shorter graph
        if not _same_input(na, nb, a_init, b_init, mapping):
            break
        mapping.update(zip(nb.output, na.output, strict=True))
        n += 1
    return mapping, n


def principal_basis(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean of `features` (n x d) and their k leading principal directions (d x k, orthonormal
    columns), for centring and projecting the ImageNet features of a composed model."""
    n, d = features.shape
    if not 0 < k <= min(n - 1, d):
        raise ComposeError(
            f"principal directions: k must be between 1 and {min(n - 1, d)} for {n} {d}-d features, got {k}"
        )
    mean = features.mean(0)
    _, _, vt = np.linalg.svd(features - mean, full_matrices=False)
    return mean, np.ascontiguousarray(vt[:k].T)


def compose(
    trained: str | Path,
    imagenet: str | Path,
    weight: float,
    mean: np.ndarray,
    out: str | Path,
    basis: np.ndarray | None = None,
) -> Path:
    """Write `out`: `trained` and `imagenet` (both `reid export` files) joined as the module docstring
    says, the ImageNet features centred by `mean` (their mean over reference photos) first and, with
    `basis` (d x k), projected onto its k directions."""
    if not 0.0 < weight < 1.0:
        raise ComposeError(f"the ImageNet weight must be strictly between 0 and 1, got {weight}")
    ea, eb = OnnxEmbedder(trained), OnnxEmbedder(imagenet)
    if ea.preprocess != eb.preprocess or ea.info.extra.get("flip_tta") != eb.info.extra.get("flip_tta"):
        raise ComposeError(
            f"{trained} and {imagenet} must share preprocessing and flip averaging: {ea.preprocess} "
            f"flip {ea.info.extra.get('flip_tta')} against {eb.preprocess} flip {eb.info.extra.get('flip_tta')} "
            "(export the ImageNet model with the same --size and flip)"
        )
    if mean.shape != (eb.dim,):
        raise ComposeError(f"the feature mean has shape {mean.shape}; {imagenet} gives {eb.dim}-d features")
    if basis is not None and (basis.ndim != 2 or basis.shape[0] != eb.dim):
        raise ComposeError(f"the projection has shape {basis.shape}; {imagenet} gives {eb.dim}-d features")
    ma, mb = onnx.load(str(trained)), onnx.load(str(imagenet))
    if ma.opset_import != mb.opset_import:
        raise ComposeError(f"{trained} and {imagenet} use different opsets; export both with this version")
    a, b = ma.graph, mb.graph
    mapping, n_shared = shared_prefix(a, b)

    a_out, b_out = a.output[0].name, b.output[0].name
    prefix, join = _free_prefix(a, "imagenet"), _free_prefix(a, "compose")
    trained_out = _free_prefix(a, "trained") + a_out  # A's output, renamed: the composed output takes its name

    def rename(name: str) -> str:
        if name in mapping:
            return trained_out if mapping[name] == a_out else mapping[name]
        return prefix + name

    b_nodes = []
    for node in b.node[n_shared:]:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = prefix + node.name
        new.input[:] = [rename(x) for x in node.input]
        new.output[:] = [prefix + x for x in node.output]
        b_nodes.append(new)
    used = {x for node in b_nodes for x in node.input}
    b_inits = []
    for t in b.initializer:
        if prefix + t.name in used:
            new = TensorProto()
            new.CopyFrom(t)
            new.name = prefix + t.name
            b_inits.append(new)

    a_nodes = [onnx.NodeProto() for _ in a.node]
    for new, node in zip(a_nodes, a.node, strict=True):
        new.CopyFrom(node)
        new.output[:] = [trained_out if x == a_out else x for x in node.output]
        new.input[:] = [trained_out if x == a_out else x for x in node.input]
    to_normalise = join + ("centred" if basis is None else "projected")
    joined = [helper.make_node("Sub", [rename(b_out), join + "mean"], [join + "centred"], name=join + "centre")]
    if basis is not None:
        joined.append(
            helper.make_node("MatMul", [join + "centred", join + "basis"], [to_normalise], name=join + "project")
        )
    joined += [
        helper.make_node("LpNormalization", [to_normalise], [join + "general"], axis=1, p=2, name=join + "normalise"),
        helper.make_node(
            "Mul", [join + "general", join + "w_general"], [join + "general_w"], name=join + "weigh_general"
        ),
        helper.make_node("Mul", [trained_out, join + "w_trained"], [join + "trained_w"], name=join + "weigh_trained"),
        helper.make_node("Concat", [join + "trained_w", join + "general_w"], [OUTPUT_NAME], axis=1, name=join + "join"),
    ]
    constants = [
        numpy_helper.from_array(mean.astype(np.float32), join + "mean"),
        numpy_helper.from_array(np.asarray(np.sqrt(weight), np.float32), join + "w_general"),  # a scalar (0-d)
        numpy_helper.from_array(np.asarray(np.sqrt(1.0 - weight), np.float32), join + "w_trained"),
    ]
    if basis is not None:
        constants.append(numpy_helper.from_array(basis.astype(np.float32), join + "basis"))
    dim = ea.dim + (eb.dim if basis is None else basis.shape[1])
    graph = helper.make_graph(
        a_nodes + b_nodes + joined,
        "composed",
        [a.input[0]],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", dim])],
        list(a.initializer) + b_inits + constants,
    )
    model = helper.make_model(graph, opset_imports=ma.opset_import, ir_version=ma.ir_version)
    onnx.checker.check_model(model)
    extra = {
        **ea.info.extra,
        "trained": "composed",
        "composed": {
            "trained": {"fingerprint": ea.fingerprint, **{k: ea.info.extra.get(k) for k in ("backbone", "trained")}},
            "imagenet": {"fingerprint": eb.fingerprint, "backbone": eb.info.extra.get("backbone")},
            "imagenet_weight": weight,
            "imagenet_dims": eb.dim if basis is None else basis.shape[1],  # kept of the ImageNet features
            "shared_nodes": n_shared,
            "join_nodes": [node.name for node in joined],  # kept in float by int8 quantisation
        },
    }
    set_info(model, ModelInfo(dim, ea.preprocess, (), extra))
    out = Path(out)
    save_whole(model, out)
    return out
