"""The public contract: every function that takes an operator takes what a user has.

A registry lists every public function of ``modelcs`` that takes an operator, with how it is
called.  Each one is called with the same linear map given as a NumPy array, a SciPy sparse
array, a ``scipy.sparse.linalg.LinearOperator``, a duck-typed ``matvec``/``rmatvec`` object
(what PyLops operators look like) and a modelcs ``ConvOperator`` (or its adjoint view): the
results agree to 1e-10 (float64).  Functions that need the convolution's geometry (pooling
regions, filter banks) say so in a ``TypeError`` for plain matrices.

A second test reads every public signature (``modelcs.__all__`` and every public function
and method of every public submodule, experiments included): no ``maxiter``, ``iter_lim``,
``seed`` or ``random_state`` (the names are ``max_iter``, ``tol``, ``rng``, ``callback``), and
``n_trials`` is keyword-only wherever it appears.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import aslinearoperator

import modelcs
from modelcs import (
    ConvOperator,
    LinearOperator,
    ModelSparse,
    TopKSparse,
    as_operator,
)

W_CONV = ConvOperator.random(2, 3, 3, 8, rng=0)  # x (3, 8) -> z (2, 6): a 12 x 24 matrix
A_W = W_CONV.to_dense()  # the layer W as a matrix
A_PHI = A_W.T  # the measurement operator Phi = W.T (24 x 12, full column rank)


class Duck:
    """What a PyLops operator looks like to modelcs: shape, matvec, rmatvec (no matmat)."""

    def __init__(self, A):
        self._A = np.asarray(A)
        self.shape = self._A.shape

    def matvec(self, v):
        return self._A @ v

    def rmatvec(self, v):
        return self._A.T @ v


def wrap(kind: str, role: str):
    """The operator ``role`` ("W" or "Phi") given as ``kind``."""
    A = A_W if role == "W" else A_PHI
    if kind == "numpy":
        return A.copy()
    if kind == "scipy_sparse":
        return sp.csr_array(A)
    if kind == "scipy_linop":
        return aslinearoperator(A)
    if kind == "duck":
        return Duck(A)
    if kind == "conv":
        return W_CONV if role == "W" else W_CONV.T
    raise AssertionError(kind)


KINDS = ["numpy", "scipy_sparse", "scipy_linop", "duck", "conv"]
RNG = np.random.default_rng(7)
X = RNG.standard_normal((4, 24))  # signals (flat), a batch of 4
Z = TopKSparse(3).sample((12,), 4, rng=3)  # 3-sparse codes (flat), a batch of 4
Y = Z @ A_PHI.T  # measurements y = Phi z


def _codes(op, flat):
    """Codes/signals in the operator's own shapes (ConvOperator: (2, 6)/(3, 8))."""
    return flat.reshape((flat.shape[0], *op.in_shape)) if flat.ndim == 2 else flat


def _meas(op, flat):
    return flat.reshape((flat.shape[0], *op.out_shape))


def _flat(a, batch=True):
    a = np.asarray(a)
    return a.reshape(a.shape[0], -1) if batch else a.reshape(-1)


def _f_iht_fixed(Phi):
    op = as_operator(Phi)
    r = modelcs.iht(Phi, _meas(op, Y), TopKSparse(3), step=0.05, max_iter=40, tol=0.0)
    return _flat(r.z)


def _f_iht_normalized(Phi):
    op = as_operator(Phi)
    r = modelcs.iht(Phi, _meas(op, Y), TopKSparse(3), step="normalized", max_iter=300,
                    tol=1e-12)
    return _flat(r.z)


def _f_iht_single(Phi):
    op = as_operator(Phi)
    r = modelcs.iht(Phi, _meas(op, Y)[0], TopKSparse(3), step="normalized", max_iter=60)
    return _flat(r.z, batch=False)


def _f_cosamp(Phi):
    op = as_operator(Phi)
    return _flat(modelcs.cosamp(Phi, _meas(op, Y), TopKSparse(3)).z)


def _f_lasso(Phi):
    op = as_operator(Phi)
    r = modelcs.lasso(Phi, _meas(op, Y), 0.05, tol=1e-15, max_iter=20000)
    return _flat(r.z)


def _f_lasso_debias(Phi):
    op = as_operator(Phi)
    return _flat(modelcs.lasso(Phi, _meas(op, Y), 0.05, tol=1e-12, debias=True).z)


def _f_debias(Phi):
    op = as_operator(Phi)
    support = _codes(op, Z) != 0
    return _flat(modelcs.debias(Phi, _meas(op, Y), support).z)


def _f_rip_ratios(Phi):
    return modelcs.rip_ratios(Phi, TopKSparse(3), n_trials=20, rng=5)


def _f_estimate_delta(Phi):
    est = modelcs.estimate_delta(Phi, TopKSparse(2), n_trials=16, rng=1)
    return np.array([est.delta, est.lambda_min, est.lambda_max, *np.sort(est.support)])


def _f_cnn_layer(W):
    op = as_operator(W, "W")
    return _flat(modelcs.cnn_layer(W, _codes(op, X), TopKSparse(4), relu=True))


def _f_pinv(W):
    op = as_operator(W, "W")
    h = _meas(op, X @ A_W.T)
    return _flat(modelcs.pinv_reconstruct(W, h, tol=1e-14).x)


def _f_singular_values(W):
    return modelcs.singular_values(W, k=2, which="largest", method="iterative", tol=1e-14,
                                   rng=0)


def _f_frame_bounds(W):
    return np.array(modelcs.frame_bounds(W, method="dense"))


def _f_dottest(W):
    return np.array([modelcs.dottest(W, rng=0) < 1e-12], dtype=float)


def _f_vstack(W):
    P = modelcs.vstack([W, as_operator(W, "W") * -1.0])
    op = as_operator(W, "W")
    return _flat(P @ _codes(op, X))


def _f_as_operator(W):
    op = modelcs.as_operator(W, "W")
    return _flat(op @ _codes(op, X)), _flat(op.T @ _meas(op, X @ A_W.T))


#: every public function that takes an operator: (name, role, call)
REGISTRY = [
    ("iht[step=0.05]", "Phi", _f_iht_fixed),
    ("iht[normalized]", "Phi", _f_iht_normalized),
    ("iht[one signal]", "Phi", _f_iht_single),
    ("cosamp", "Phi", _f_cosamp),
    ("lasso", "Phi", _f_lasso),
    ("lasso[debias]", "Phi", _f_lasso_debias),
    ("debias", "Phi", _f_debias),
    ("rip_ratios", "Phi", _f_rip_ratios),
    ("estimate_delta", "Phi", _f_estimate_delta),
    ("cnn_layer", "W", _f_cnn_layer),
    ("pinv_reconstruct", "W", _f_pinv),
    ("singular_values", "W", _f_singular_values),
    ("frame_bounds", "W", _f_frame_bounds),
    ("dottest", "W", _f_dottest),
    ("vstack", "W", _f_vstack),
    ("as_operator", "W", _f_as_operator),
]

#: public functions that need the convolution's geometry, with how to call them
def _x0(W):
    return X[0].reshape(3, 8) if isinstance(W, ConvOperator) else X[0]


CONV_ONLY = [
    ("coherence", lambda W: modelcs.coherence(W)),
    ("coherence_pair", lambda W: modelcs.coherence_pair(W)),
    ("l1_support_recovery", lambda W: modelcs.l1_support_recovery(W, _x0(W), 0.01, pool=2)),
    ("cnn_layer_pooled",
     lambda W: modelcs.cnn_layer_pooled(W, _x0(W), ModelSparse(None, pool=2))),
    ("crelu_pool", lambda W: modelcs.crelu_pool(W, _x0(W), pool=2)),
    ("theorem_a5_bound",
     lambda W: modelcs.theorem_a5_bound(W, np.eye(2, 6) if isinstance(W, ConvOperator)
                                        else np.eye(2, 6).ravel())),
    ("theorem_a5_terms",
     lambda W: modelcs.theorem_a5_terms(W, np.eye(2, 6) if isinstance(W, ConvOperator)
                                        else np.eye(2, 6).ravel())),
]


def _covered_names():
    return {name.split("[")[0] for name, _, _ in REGISTRY} | {n for n, _ in CONV_ONLY}


def test_registry_covers_every_public_function_taking_an_operator():
    # a public function whose first parameter is an operator must be in one of the lists
    # (so that adding one without testing it here fails)
    op_params = {"Phi", "W", "op", "operators", "W_or_filters", "obj"}
    taking = set()
    for name in modelcs.__all__:
        obj = getattr(modelcs, name)
        if inspect.isfunction(obj):
            params = list(inspect.signature(obj).parameters)
            if params and params[0] in op_params:
                taking.add(name)
    missing = taking - _covered_names()
    assert not missing, f"public functions taking an operator but not tested here: {missing}"
    assert {"iht", "cosamp", "lasso", "debias", "pinv_reconstruct", "rip_ratios"} <= taking


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name, role, call", REGISTRY, ids=[r[0] for r in REGISTRY])
def test_same_result_whatever_the_wrapper(name, role, call, kind):
    ref = call(wrap("conv", role))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent fallbacks or conversions
        got = call(wrap(kind, role))
    if isinstance(ref, tuple):
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-10)
    else:
        assert np.shape(got) == np.shape(ref)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("kind", ["numpy", "scipy_sparse", "scipy_linop", "duck"])
@pytest.mark.parametrize("name, call", CONV_ONLY, ids=[c[0] for c in CONV_ONLY])
def test_conv_only_functions_say_so(name, call, kind):
    # a plain matrix is a TypeError; a 2-D array where a filter bank (K, M, *l) is expected
    # is a ValueError (right type, wrong shape); both name ConvOperator
    with pytest.raises((TypeError, ValueError), match="ConvOperator"):
        call(wrap(kind, "W"))
    call(W_CONV)  # and they do work with one


def test_results_are_identical_on_the_recovered_codes():
    # not only equal among wrappers: the codes are actually recovered (a non-trivial check)
    for f in (_f_iht_normalized, _f_cosamp, _f_debias):
        np.testing.assert_allclose(f(A_PHI), Z, atol=1e-8)


def test_bad_operators_name_the_parameter():
    with pytest.raises(TypeError, match="parameter 'Phi'.*got str"):
        modelcs.iht("A", Y[0], TopKSparse(3))
    with pytest.raises(ValueError, match="parameter 'Phi' must be a 2-D matrix"):
        modelcs.iht(np.ones(5), Y[0], TopKSparse(3))
    with pytest.raises(TypeError, match="parameter 'W'.*complex"):
        modelcs.pinv_reconstruct(A_W.astype(complex), X[0] @ A_W.T)

    class NoAdjoint:
        shape = (3, 4)

        def matvec(self, v):
            return v[:3]

    with pytest.raises(TypeError, match="rmatvec"):
        modelcs.lasso(NoAdjoint(), np.ones(3), 0.1)
    with pytest.raises(ValueError, match="parameter 'y' has shape"):
        modelcs.cosamp(A_PHI, np.ones(23), TopKSparse(3))


def test_matrix_operator_shapes_and_dot_test():
    op = modelcs.MatrixOperator(A_PHI, in_shape=(2, 6), out_shape=(3, 8))
    assert op.in_shape == (2, 6) and op.out_shape == (3, 8)
    np.testing.assert_allclose(op @ Z[0].reshape(2, 6), (W_CONV.T @ Z[0].reshape(2, 6)))
    for kind in KINDS:
        assert modelcs.dottest(as_operator(wrap(kind, "Phi"))) < 1e-12
        assert modelcs.dottest(as_operator(wrap(kind, "Phi")), batch=3) < 1e-12
    with pytest.raises(ValueError, match="in_shape"):
        modelcs.MatrixOperator(A_PHI, in_shape=(5, 5))
    assert as_operator(W_CONV) is W_CONV


def test_array_of_an_operator_points_to_to_dense():
    with pytest.raises(TypeError, match="to_dense"):
        np.asarray(W_CONV)
    with pytest.raises(TypeError, match="to_dense"):
        np.asarray(as_operator(A_W))


def test_result_type_repr_and_equality():
    r = modelcs.iht(A_PHI, Y, TopKSparse(3), step="normalized")
    assert isinstance(r, modelcs.RecoveryResult)
    assert isinstance(modelcs.cosamp(A_PHI, Y, TopKSparse(3)), modelcs.RecoveryResult)
    assert isinstance(modelcs.lasso(A_PHI, Y, 0.1), modelcs.RecoveryResult)
    text = repr(r)
    assert len(text.splitlines()) <= 10 and "shape=(4, 12)" in text
    assert r == r and r != modelcs.iht(A_PHI, Y, TopKSparse(3), step="normalized")
    assert {r: 1}[r] == 1  # hashable (identity)
    one = modelcs.iht(A_PHI, Y[0], TopKSparse(3), step="normalized")
    assert isinstance(one.n_iter, int) and isinstance(one.converged, bool)
    assert isinstance(one.residual_norm, float) and one.residual_norms.ndim == 1
    assert r.n_iter.shape == (4,) and r.residual_norm.shape == (4,)
    pinv = modelcs.pinv_reconstruct(A_W, X @ A_W.T)
    assert isinstance(pinv, modelcs.RecoveryResult) and pinv.x is pinv.z
    for res in (r, modelcs.lasso(A_PHI, Y, 0.1), modelcs.debias(A_PHI, Y, Z != 0), pinv):
        for field in ("z", "n_iter", "converged", "diverged", "residual_norm",
                      "residual_norms"):
            assert hasattr(res, field), field


# ------------------------------------------------------------------ conventions
BANNED = {"maxiter", "iter_lim", "seed", "random_state"}


def _members(prefix, obj):
    """``obj`` and, for a class, its public methods (class/static methods unwrapped)."""
    out = [(prefix, obj)]
    if inspect.isclass(obj):
        for meth_name, meth in vars(obj).items():
            if meth_name.startswith("_"):
                continue
            if isinstance(meth, (classmethod, staticmethod)):
                meth = meth.__func__
            if inspect.isfunction(meth):
                out.append((f"{prefix}.{meth_name}", meth))
    return out


def _public_modules():
    """``modelcs`` and every public submodule (``modelcs.experiments.figure2``...): the
    experiment functions are public even where they are not in a package ``__all__``."""
    import importlib
    import pkgutil

    mods = [modelcs]
    for info in pkgutil.walk_packages(modelcs.__path__, "modelcs."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]):  # private modules, __main__
            continue
        mods.append(importlib.import_module(info.name))
    return mods


def _public_callables():
    out = []
    for name in modelcs.__all__:
        obj = getattr(modelcs, name)
        if inspect.isclass(obj) or callable(obj):
            out += _members(name, obj)
    for mod in _public_modules():
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue  # private, or imported from elsewhere (listed where it is defined)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                out += _members(f"{mod.__name__}.{name}", obj)
    return out


def test_the_conventions_walk_reaches_the_experiment_modules():
    names = {q for q, _ in _public_callables()}
    for q in ("modelcs.experiments.figure2.figure2_experiment",
              "modelcs.experiments.figure2.run_demo",
              "modelcs.experiments.coherence_tables.coherence_table",
              "modelcs.experiments.learned.random_like",
              "modelcs.experiments.learned.relu_pinv_error",
              "modelcs.experiments.learned.mobilenet_v2_study",
              "modelcs.experiments.phase.sweep.phase_transition"):
        assert q in names, q


def test_public_signatures_use_the_library_names():
    bad = []
    for qual, obj in _public_callables():
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        bad += [f"{qual}({p})" for p in params if p in BANNED]
    assert not bad, f"use max_iter / rng instead of: {bad}"


def test_the_conventions_test_can_fail():
    def f(x, *, maxiter=3, seed=None):
        """A function with the old names."""

    params = inspect.signature(f).parameters
    assert {p for p in params if p in BANNED} == {"maxiter", "seed"}


def test_n_trials_is_keyword_only_everywhere():
    for qual, obj in _public_callables():
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        p = params.get("n_trials")
        if p is not None:
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, qual


def test_one_rng_default():
    defaults = set()
    for _qual, obj in _public_callables():
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        if "rng" in params and params["rng"].default is not inspect.Parameter.empty:
            defaults.add(params["rng"].default)  # a required rng has no default to differ
    assert defaults == {None}, defaults


def test_linear_operator_is_the_base_of_what_as_operator_returns():
    for kind in KINDS:
        assert isinstance(as_operator(wrap(kind, "W"), "W"), LinearOperator)
