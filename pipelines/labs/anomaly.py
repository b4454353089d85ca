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


class _Graph:
    """Initializers and nodes added to skl2onnx's container under unique names."""

    def __init__(self, scope: Any, container: Any) -> None:
        from onnx import TensorProto

        self.scope = scope
        self.container = container
        self.axes = self.name("axes")  # the feature axis, for row sums
        container.add_initializer(self.axes, TensorProto.INT64, [1], [1])

    def name(self, hint: str) -> str:
        return str(self.scope.get_unique_variable_name(hint))

    def const(self, hint: str, value: np.ndarray) -> str:
        from onnx import TensorProto

        n = self.name(hint)
        arr = np.asarray(value, dtype=np.float32)
        self.container.add_initializer(n, TensorProto.FLOAT, list(arr.shape), arr.ravel().tolist())
        return n

    def node(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.output(op, inputs, out, **attrs)
        return out

    def output(self, op: str, inputs: list[str], out: str, **attrs: Any) -> None:
        """A node that writes the named graph output `out`."""
        name = self.scope.get_unique_operator_name(op)
        self.container.add_node(op, inputs, [out], name=name, **attrs)

    def rowsum(self, x: str, hint: str) -> str:
        return self.node("ReduceSum", [x, self.axes], hint, keepdims=1)


def _fill_missing(g: _Graph, z: str, missing: str, precision: str, eps: str, steps: int) -> str:
    """z with its missing block at the conditional mean: conjugate gradient on
    P_mm z_m = -P_mo z_o from z_m = 0, exact after `steps` (the feature count)."""
    r = g.node("Neg", [g.node("Mul", [missing, g.node("MatMul", [z, precision], "g")], "gm")], "r")
    p = r
    rs = g.rowsum(g.node("Mul", [r, r], "rr"), "rs")
    for _ in range(steps):
        ap = g.node("Mul", [missing, g.node("MatMul", [p, precision], "pp")], "ap")
        pap = g.rowsum(g.node("Mul", [p, ap], "pap_e"), "pap")
        alpha = g.node("Div", [rs, g.node("Add", [pap, eps], "pap_eps")], "alpha")
        z = g.node("Add", [z, g.node("Mul", [alpha, p], "step")], "z")
        r = g.node("Sub", [r, g.node("Mul", [alpha, ap], "rstep")], "r")
        rs_new = g.rowsum(g.node("Mul", [r, r], "rr"), "rs")
        beta = g.node("Div", [rs_new, g.node("Add", [rs, eps], "rs_eps")], "beta")
        p = g.node("Add", [r, g.node("Mul", [beta, p], "bp")], "p")
        rs = rs_new
    return z


def _converter(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto

    model: PanelAnomalyModel = operator.raw_operator
    g = _Graph(scope, container)
    x = operator.inputs[0].full_name
    center = g.const("center", model.center_)
    scale = g.const("scale", model.scale_)
    precision = g.const("precision", model.precision_)
    one = g.const("one", np.array(1.0))
    eps = g.const("eps", np.array(1e-30))

    missing_b = g.node("IsNaN", [x], "missing_b")
    missing = g.node("Cast", [missing_b], "missing", to=TensorProto.FLOAT)
    present = g.node("Sub", [one, missing], "present")
    filled = g.node("Where", [missing_b, center, x], "filled")
    z = g.node("Div", [g.node("Sub", [filled, center], "centered"), scale], "z")
    z = _fill_missing(g, z, missing, precision, eps, model.n_features_in_)
    pz = g.node("MatMul", [z, precision], "pz")
    contributions = operator.outputs[1].full_name
    g.output("Mul", [g.node("Mul", [z, pz], "zpz"), present], contributions)
    g.output("ReduceSum", [contributions, g.axes], operator.outputs[0].full_name, keepdims=1)


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
