"""The multivariate anomaly model for a panel, and its ONNX export through skl2onnx.

A robust Gaussian (scikit-learn's MinCovDet) over log-transformed canonical values.
The ONNX graph takes `values` [N, F] (log canonical units, NaN where an analyte is
not in the panel) and gives:

- `d2` [N, 1]: the Mahalanobis distance of the observed analytes. Missing analytes
  are filled with their conditional mean given the observed ones (an unrolled
  conjugate-gradient solve inside the graph), which makes the full-vector distance
  equal to the observed marginal's;
- `contributions` [N, F]: z_i * (P z)_i per analyte. They add up to d2, and are zero
  for missing analytes (the gradient there vanishes at the conditional mean).

The pipeline turns d2 into a tail probability with k = number of observed analytes
degrees of freedom; the card's threshold on 1 - p was calibrated on held-out normal
panels to a fixed false-alarm rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import chi2
from sklearn.base import BaseEstimator
from sklearn.covariance import MinCovDet

LOG_FLOOR = 1e-3  # values are positive in canonical units; a zero count is floored


def to_features(values: np.ndarray) -> np.ndarray:
    """Canonical values [N, F] (NaN: absent) to model inputs; the same function for
    training and serving."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(np.maximum(values, LOG_FLOOR)).astype(np.float32)


class PanelAnomalyModel(BaseEstimator):  # type: ignore[misc]
    def __init__(self, support_fraction: float = 0.8, random_state: int = 0) -> None:
        self.support_fraction = support_fraction
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: Any = None) -> PanelAnomalyModel:
        """`x`: log features of complete normal panels [n, F]."""
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        mcd = MinCovDet(support_fraction=self.support_fraction, random_state=self.random_state)
        mcd.fit((x - mean) / scale)
        self.center_ = (mean + scale * mcd.location_).astype(np.float32)
        self.scale_ = scale.astype(np.float32)
        self.precision_ = mcd.get_precision().astype(np.float32)
        self.n_features_in_ = x.shape[1]
        return self

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        """Reference implementation (exact solve per row): (d2 [N], contributions [N, F])."""
        precision = self.precision_.astype(np.float64)
        z = (x.astype(np.float64) - self.center_) / self.scale_
        d2 = np.zeros(len(z))
        contributions = np.zeros_like(z)
        for i, row in enumerate(z):
            seen = ~np.isnan(row)
            full = np.where(seen, row, 0.0)
            miss = ~seen
            if miss.any() and seen.any():
                rhs = -precision[np.ix_(miss, seen)] @ row[seen]
                full[miss] = np.linalg.solve(precision[np.ix_(miss, miss)], rhs)
            contributions[i] = np.where(seen, full * (precision @ full), 0.0)
            d2[i] = contributions[i].sum()
        return d2, contributions


def tail_probability(d2: np.ndarray, analytes: np.ndarray) -> np.ndarray:
    """P(D2 >= d2) for a Gaussian panel of `analytes` observed analytes."""
    return np.asarray(chi2.sf(np.maximum(d2, 0.0), np.maximum(analytes, 1)))


def anomaly_score(p: np.ndarray) -> np.ndarray:
    return -np.log10(np.maximum(p, 1e-300))


# ---- skl2onnx: a parser (two outputs) and a converter for PanelAnomalyModel


def _shape_calculator(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    n = operator.inputs[0].get_first_dimension()
    features = operator.raw_operator.n_features_in_
    operator.outputs[0].type = FloatTensorType([n, 1])
    operator.outputs[1].type = FloatTensorType([n, features])


def _parser(scope: Any, model: Any, inputs: Any, custom_parsers: Any = None) -> Any:
    from skl2onnx._supported_operators import get_model_alias
    from skl2onnx.common.data_types import FloatTensorType

    operator = scope.declare_local_operator(get_model_alias(type(model)), model)
    operator.inputs = inputs
    operator.outputs.append(scope.declare_local_variable("d2", FloatTensorType()))
    operator.outputs.append(scope.declare_local_variable("contributions", FloatTensorType()))
    return operator.outputs


def _converter(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto

    model: PanelAnomalyModel = operator.raw_operator
    features = model.n_features_in_

    def name(hint: str) -> str:
        return str(scope.get_unique_variable_name(hint))

    def const(hint: str, value: np.ndarray) -> str:
        n = name(hint)
        arr = np.asarray(value, dtype=np.float32)
        container.add_initializer(n, TensorProto.FLOAT, list(arr.shape), arr.ravel().tolist())
        return n

    def node(op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = name(hint)
        container.add_node(op, inputs, [out], name=scope.get_unique_operator_name(op), **attrs)
        return out

    axes = name("axes")
    container.add_initializer(axes, TensorProto.INT64, [1], [1])

    def rowsum(x: str, hint: str) -> str:
        return node("ReduceSum", [x, axes], hint, keepdims=1)

    x = operator.inputs[0].full_name
    center = const("center", model.center_)
    scale = const("scale", model.scale_)
    precision = const("precision", model.precision_)
    one = const("one", np.array(1.0))
    eps = const("eps", np.array(1e-30))

    missing_b = node("IsNaN", [x], "missing_b")
    missing = node("Cast", [missing_b], "missing", to=TensorProto.FLOAT)
    present = node("Sub", [one, missing], "present")
    filled = node("Where", [missing_b, center, x], "filled")
    z = node("Div", [node("Sub", [filled, center], "centered"), scale], "z")
    # conjugate gradient on the missing block: P_mm z_m = -P_mo z_o, from z_m = 0
    r = node("Neg", [node("Mul", [missing, node("MatMul", [z, precision], "g")], "gm")], "r")
    p = r
    rs = rowsum(node("Mul", [r, r], "rr"), "rs")
    for _ in range(features):
        ap = node("Mul", [missing, node("MatMul", [p, precision], "pp")], "ap")
        pap = rowsum(node("Mul", [p, ap], "pap_e"), "pap")
        alpha = node("Div", [rs, node("Add", [pap, eps], "pap_eps")], "alpha")
        z = node("Add", [z, node("Mul", [alpha, p], "step")], "z")
        r = node("Sub", [r, node("Mul", [alpha, ap], "rstep")], "r")
        rs_new = rowsum(node("Mul", [r, r], "rr"), "rs")
        beta = node("Div", [rs_new, node("Add", [rs, eps], "rs_eps")], "beta")
        p = node("Add", [r, node("Mul", [beta, p], "bp")], "p")
        rs = rs_new
    pz = node("MatMul", [z, precision], "pz")
    contributions = operator.outputs[1].full_name
    container.add_node(
        "Mul",
        [node("Mul", [z, pz], "zpz"), present],
        [contributions],
        name=scope.get_unique_operator_name("Mul"),
    )
    container.add_node(
        "ReduceSum",
        [contributions, axes],
        [operator.outputs[0].full_name],
        name=scope.get_unique_operator_name("ReduceSum"),
        keepdims=1,
    )


def export_onnx(model: PanelAnomalyModel, opset: int = 17) -> bytes:
    from skl2onnx import convert_sklearn, update_registered_converter
    from skl2onnx.common.data_types import FloatTensorType

    update_registered_converter(
        PanelAnomalyModel,
        "AidxPanelAnomalyModel",
        _shape_calculator,
        _converter,
        parser=_parser,
    )
    onx = convert_sklearn(
        model,
        initial_types=[("values", FloatTensorType([None, model.n_features_in_]))],
        target_opset=opset,
    )
    onx.doc_string = "aidx lab panel anomaly model (demo weights, not for clinical use)"
    return bytes(onx.SerializeToString())
