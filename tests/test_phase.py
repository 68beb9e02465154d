"""Tests for modelcs.experiments.phase (phase-transition sweeps, local and on Dask)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from modelcs.cli import main
from modelcs.experiments import phase
from modelcs.experiments.phase import (
    PhaseTransitionResult,
    draw_problem,
    phase_transition,
)

SMALL = dict(K=6, l=3, D=10, ks=[1, 2, 4], channels=[1, 3], trials=6, progress=False, rng=0)


def _fake_result(success_rows, ks=(1, 2, 3, 4), channels=None, trials=10):
    s = np.asarray(success_rows, dtype=float)[None]
    channels = channels or tuple(range(1, s.shape[1] + 1))
    counts = np.rint(s * trials).astype(np.int64)
    return PhaseTransitionResult(
        K=8, l=(3,), D=(10,), ks=tuple(ks), channels=tuple(channels), algorithms=("iht",),
        trials=trials, root_seed=0, success_tol=1e-4, counts=counts,
        median_error=np.where(counts == trials, 0.0, np.inf).astype(float),
    )


# ------------------------------------------------------------------------- data
def test_draw_problem_codes_are_model_sparse_and_x_is_synthesis():
    W, Z = draw_problem(7, (3,), (12,), 2, 3, 5, rng=4)
    assert W.in_shape == (2, 12) and Z.shape == (5, 7, 10)
    # exactly k nonzeros, at most one per filter block, values in [-1, 1]
    assert (np.count_nonzero(Z.reshape(5, -1), axis=1) == 3).all()
    assert np.count_nonzero(Z, axis=2).max() == 1
    assert np.abs(Z).max() <= 1.0
    # the filters follow Theorem 3.1's scaling: entries ~ N(0, 1/(M l))
    assert W.filters.shape == (7, 2, 3)


def test_filters_shared_along_a_row_and_codes_differ_per_cell():
    W1, Z1 = draw_problem(6, (3,), (10,), 2, 1, 4, rng=0)
    W2, Z2 = draw_problem(6, (3,), (10,), 2, 3, 4, rng=0)
    W3, _ = draw_problem(6, (3,), (10,), 2, 3, 4, rng=1)
    np.testing.assert_array_equal(W1.filters, W2.filters)
    assert not np.array_equal(W1.filters, W3.filters)
    W4, Z4 = draw_problem(6, (3,), (10,), 2, 3, 4, rng=0)
    np.testing.assert_array_equal(Z2, Z4)  # deterministic
    assert np.count_nonzero(Z1[0]) == 1 and np.count_nonzero(Z2[0]) == 3


def test_cells_do_not_depend_on_the_rest_of_the_grid():
    a = phase_transition(**{**SMALL, "ks": [1, 2, 4], "channels": [1, 3]},
                         algorithms=["model_iht"])
    b = phase_transition(**{**SMALL, "ks": [4], "channels": [3]}, algorithms=["model_iht"])
    assert a.counts[0, 1, 2] == b.counts[0, 0, 0]
    np.testing.assert_array_equal(a.median_error[0, 1, 2], b.median_error[0, 0, 0])


# ------------------------------------------------------------- counting is right
def _numpy_model_iht(A, y, K, k, n_iter=400):
    """Plain per-signal model-IHT on a dense matrix, written here independently of modelcs:
    step 1/||A||_2^2, keep the largest entry of each of the K blocks, then the k largest."""
    mu = 1.0 / np.linalg.norm(A, 2) ** 2
    z = np.zeros(A.shape[1])
    for _ in range(n_iter):
        g = (z + mu * A.T @ (y - A @ z)).reshape(K, -1)
        pos = np.argmax(np.abs(g), axis=1)
        val = g[np.arange(K), pos]
        keep = np.argsort(-np.abs(val), kind="stable")[:k]
        z = np.zeros_like(g)
        z[keep, pos[keep]] = val[keep]
        z = z.ravel()
    return z


def _batched_numpy_model_iht(Phi, Y, k):
    A = Phi.to_dense()
    K = Phi.in_shape[0]
    return np.stack([_numpy_model_iht(A, y.ravel(), K, k).reshape(Phi.in_shape) for y in Y])


def test_counts_match_an_independent_recount():
    # the sweep (data generation, batched call, error and success counting) against a
    # recount in plain NumPy: the same trials redrawn, solved one by one by an IHT loop
    # written in this test, errors and counts computed here
    r = phase_transition(K=8, l=3, D=12, ks=[2, 5], channels=[2],
                         algorithms=[_batched_numpy_model_iht], trials=12, rng=0,
                         progress=False)
    assert r.algorithms == ("_batched_numpy_model_iht",)
    for j, k in enumerate([2, 5]):
        W, Z = draw_problem(8, (3,), (12,), 2, k, 12, rng=0)
        A = W.T.to_dense()
        rel = []
        for b in range(12):
            zh = _numpy_model_iht(A, A @ Z[b].ravel(), 8, k)
            rel.append(np.linalg.norm(zh - Z[b].ravel()) / np.linalg.norm(Z[b]))
        assert r.counts[0, 0, j] == sum(e <= 1e-4 for e in rel)
        assert r.median_error[0, 0, j] == pytest.approx(np.median(rel), rel=1e-6, abs=1e-12)
    assert 0 < r.counts.sum() < 24  # some successes and some failures: a real check


def test_easy_cells_succeed_and_impossible_cells_fail():
    # M*D = 60 measurements of a 1-sparse code: easy for every algorithm
    easy = phase_transition(K=6, l=3, D=10, ks=[1], channels=[6], trials=10, progress=False,
                            rng=0)
    assert easy.success.shape == (3, 1, 1)
    np.testing.assert_array_equal(easy.success, 1.0)
    np.testing.assert_array_equal(easy.median_error < 1e-6, True)
    # 4 measurements, 6 unknown nonzeros: the code is not identifiable even with its support
    bad = phase_transition(K=6, l=3, D=4, ks=[6], channels=[1], trials=10, progress=False,
                           rng=0)
    np.testing.assert_array_equal(bad.success, 0.0)
    assert (bad.median_error > 1e-2).all()


def test_lstsq_on_support_matches_dense_least_squares(rng):
    from modelcs import ConvOperator, debias

    W = ConvOperator.random(5, 3, 3, 9, rng=2)
    Phi = W.T
    A = Phi.to_dense()  # (M*D, K*n), small
    mask = rng.random((4, *W.out_shape)) < 0.2
    X = rng.standard_normal((4, *W.in_shape))
    Z = debias(Phi, X, mask).z
    for b in range(4):
        cols = np.flatnonzero(mask[b].ravel())
        ref = np.zeros(A.shape[1])
        ref[cols] = np.linalg.lstsq(A[:, cols], X[b].ravel(), rcond=None)[0]
        np.testing.assert_allclose(Z[b].ravel(), ref, atol=1e-9)


def test_two_dimensional_grid():
    r = phase_transition(K=4, l=(2, 2), D=(5, 5), ks=[1, 2], channels=[2], trials=4,
                         algorithms=["model_iht", "iht"], progress=False, rng=0)
    assert r.l == (2, 2) and r.D == (5, 5)
    assert r.success.shape == (2, 1, 2)
    assert r.code_size == 4 * 16


# ----------------------------------------------------------------------- Dask
def test_local_and_localcluster_give_identical_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    kw = dict(K=8, l=3, D=12, ks=[1, 3, 6], channels=[1, 2, 4], trials=8, progress=False,
              rng=3)
    local = phase_transition(**kw)
    with phase.local_cluster(2) as cluster, distributed.Client(cluster) as client:
        assert isinstance(cluster, distributed.LocalCluster)
        remote = phase_transition(client=client, **kw)
        env = client.run(lambda: (os.getpid(), os.environ.get("MALLOC_TRIM_THRESHOLD_")))
        # the command line on the same running scheduler (--scheduler ADDRESS)
        args = ["phase", "--K", "8", "--l", "3", "--D", "12", "--ks", "1,3,6", "--channels",
                "1,2,4", "--trials", "8", "--seed", "3", "--no-progress"]
        assert main([*args, "--scheduler", cluster.scheduler_address,
                     "--out", str(tmp_path)]) == 0
    via_cli = PhaseTransitionResult.load(tmp_path / "phase.json")
    assert via_cli.backend == "dask"
    np.testing.assert_array_equal(via_cli.counts, local.counts)
    # two separate worker processes on loopback, without Dask's malloc-trim setting
    assert len({pid for pid, _ in env.values()}) == 2
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in env)
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        assert all(trim is None for _, trim in env.values())
    assert remote.backend == "dask" and local.backend == "local"
    np.testing.assert_array_equal(local.counts, remote.counts)
    np.testing.assert_array_equal(local.success, remote.success)
    np.testing.assert_array_equal(local.median_error, remote.median_error)
    assert 0 < local.success.mean() < 1  # not a trivially constant grid


def test_cli_local_cluster_matches_local_run(tmp_path):
    pytest.importorskip("distributed")
    args = ["phase", "--K", "6", "--l", "3", "--D", "10", "--ks", "1,3,6", "--channels", "2",
            "--trials", "5", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--local-cluster", "2", "--out", str(tmp_path / "b")]) == 0
    a = PhaseTransitionResult.load(tmp_path / "a" / "phase.json")
    b = PhaseTransitionResult.load(tmp_path / "b" / "phase.json")
    assert (a.backend, b.backend) == ("local", "dask")
    np.testing.assert_array_equal(a.counts, b.counts)


def test_client_must_look_like_a_dask_client():
    with pytest.raises(TypeError, match="client"):
        phase_transition(**SMALL, client=object())


# ---------------------------------------------------------------- result object
def test_json_round_trip_is_exact(tmp_path):
    r = phase_transition(**SMALL)
    r.median_error[0, 0, 0] = np.inf  # diverged cells must survive JSON too
    d = json.loads(json.dumps(r.to_dict()))
    back = PhaseTransitionResult.from_dict(d)
    for name in ("K", "l", "D", "ks", "channels", "algorithms", "trials", "root_seed",
                 "success_tol", "backend"):
        assert getattr(back, name) == getattr(r, name), name
    np.testing.assert_array_equal(back.counts, r.counts)
    np.testing.assert_array_equal(back.success, r.success)
    np.testing.assert_array_equal(back.median_error, r.median_error)
    np.testing.assert_array_equal(back.cell_seconds, r.cell_seconds)
    np.testing.assert_array_equal(back.cell_cpu_seconds, r.cell_cpu_seconds)
    assert (r.cell_seconds > 0).all() and r.cell_seconds.shape == r.counts.shape
    # records without timings (older files) still load
    d.pop("cell_seconds"), d.pop("cell_cpu_seconds")
    assert PhaseTransitionResult.from_dict(d).cell_seconds is None
    r.save(tmp_path / "r.json")
    np.testing.assert_array_equal(PhaseTransitionResult.load(tmp_path / "r.json").counts,
                                  r.counts)


def test_from_dict_rejects_foreign_or_inconsistent_records():
    r = phase_transition(**SMALL, algorithms=["iht"])
    with pytest.raises(ValueError, match="phase-transition record"):
        PhaseTransitionResult.from_dict({"kind": "something else"})
    d = r.to_dict()
    d["ks"] = d["ks"][:-1]
    with pytest.raises(ValueError, match="counts"):
        PhaseTransitionResult.from_dict(d)


def test_transition_k_interpolates_the_50_percent_crossing():
    r = _fake_result([[1.0, 0.8, 0.2, 0.0],   # crosses between k=2 and 3: 2 + 0.3/0.6
                      [1.0, 1.0, 1.0, 0.6],   # never below 50%: censored at ks[-1]
                      [0.4, 0.2, 0.0, 0.0],   # below 50% from the start: nan
                      [1.0, 0.5, 0.5, 0.0]])  # 0.5 counts as success: crossing at k=3
    t = r.transition_k("iht")
    assert t[0] == pytest.approx(2.5)
    assert t[1] == 4
    assert np.isnan(t[2])
    assert t[3] == pytest.approx(3.0)
    text = phase.summary(r)
    assert ">=4" in text and "<1" in text and "2.50" in text


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    r = phase_transition(**SMALL)
    p = tmp_path / "phase.png"
    fig = r.plot(p)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) >= 4  # 3 heat maps + transitions panel (+ colorbar)
    # single-row / single-column grids still plot (no contour possible)
    _fake_result([[1.0, 0.0, 0.0, 0.0]]).plot(tmp_path / "one.png")
    assert (tmp_path / "one.png").stat().st_size > 0


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(ks=[2, 1]), ValueError, "strictly increasing"),
        (dict(ks=[]), ValueError, "must not be empty"),
        (dict(ks=[1, 7]), ValueError, "k=7 > K=6"),
        (dict(ks=[0, 1]), ValueError, "positive integer"),
        (dict(ks="12"), TypeError, "sequence"),
        (dict(channels=[3, 3]), ValueError, "strictly increasing"),
        (dict(channels=[1.5]), TypeError, "channels"),
        (dict(algorithms=["omp"]), ValueError, "unknown entry 'omp'"),
        (dict(algorithms=["iht", "iht"]), ValueError, "duplicates"),
        (dict(algorithms=[]), ValueError, "must not be empty"),
        (dict(trials=0), ValueError, "trials"),
        (dict(K=0), ValueError, "'K'"),
        (dict(l=11), ValueError, "must not exceed"),
        (dict(l=(1, 2, 3), D=(4, 4, 4)), ValueError, "1-D or 2-D"),
        (dict(success_tol=0.0), ValueError, "success_tol"),
        (dict(success_tol=2.0), ValueError, "success_tol"),
        (dict(rng=-1), ValueError, "rng"),
        (dict(rng=1.5), TypeError, "rng"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(change, exc, match):
    with pytest.raises(exc, match=match):
        phase_transition(**{**SMALL, **change})


# ------------------------------------------------------------------------ CLI
def test_cli_writes_json_and_figure(tmp_path, capsys):
    rc = main(["phase", "--K", "6", "--l", "3", "--D", "10", "--ks", "1:3", "--channels",
               "1,3", "--algorithms", "model_iht,iht", "--trials", "4", "--no-progress",
               "--out", str(tmp_path)])
    assert rc == 0
    r = PhaseTransitionResult.load(tmp_path / "phase.json")
    assert r.ks == (1, 2, 3) and r.channels == (1, 3) and r.algorithms == ("model_iht", "iht")
    assert (tmp_path / "phase.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "k at 50% success" in out and "phase.json" in out
    assert "model_iht vs iht:" in out and "parallelism" in out
    ref = phase_transition(K=6, l=3, D=10, ks=[1, 2, 3], channels=[1, 3], trials=4,
                           algorithms=["model_iht", "iht"], progress=False, rng=0)
    np.testing.assert_array_equal(r.counts, ref.counts)


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["phase", "--K", "4", "--ks", "1:6", "--out", str(tmp_path)]) == 2
    assert "k=6 > K=4" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["phase", "--ks", "one:two", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "inclusive range" in capsys.readouterr().err


def test_cli_unreachable_scheduler_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("distributed")
    assert main(["phase", "--scheduler", "nonsense", "--out", str(tmp_path)]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


def test_progress_bar_shown_on_a_terminal(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    phase_transition(**{**SMALL, "progress": True}, algorithms=["iht"])
    err = capsys.readouterr().err
    assert "phase transition" in err and "6/6" in err
    phase_transition(**{**SMALL, "progress": False}, algorithms=["iht"])
    assert capsys.readouterr().err == ""


def test_int_list_parser():
    assert phase.int_list("1:4") == [1, 2, 3, 4]
    assert phase.int_list("2:10:4,12") == [2, 6, 10, 12]
    assert phase.int_list("3") == [3]
    assert phase.shape_arg("3x4") == (3, 4) and phase.shape_arg("5") == 5
    from modelcs._cli import size_arg  # the one size parser of every subcommand

    assert phase.shape_arg is size_arg and size_arg("3,4") == (3, 4)


# ------------------------------------------------------- other operator families
def test_gaussian_sweep_local_equals_dask_and_plots(tmp_path):
    distributed = pytest.importorskip("distributed")
    kw = dict(operator="gaussian", n=30, measurements=[8, 16], ks=[1, 3, 6],
              algorithms=("niht", "cosamp", "lasso"), trials=6, rng=11, progress=False)
    local = phase_transition(**kw)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = phase_transition(client=client, **kw)
    assert (local.backend, remote.backend) == ("local", "dask")
    np.testing.assert_array_equal(local.counts, remote.counts)
    np.testing.assert_array_equal(local.median_error, remote.median_error)
    assert local.operator == "gaussian" and local.code_size == 30
    assert local.success.shape == (3, 2, 3)
    assert (local.success[:, 1, 0] == 1).all()  # 1-sparse from 16 measurements: always
    assert (local.success[:, 0, -1] < 1).all()  # 6-sparse from 8 measurements: not always
    fig = local.plot(tmp_path / "gauss.png")
    assert (tmp_path / "gauss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.axes[0].get_ylabel() == "measurements m"
    back = PhaseTransitionResult.from_dict(json.loads(json.dumps(local.to_dict())))
    assert back.operator == "gaussian" and back.n == 30 and back.K is None
    assert "operator=gaussian" in phase.summary(local)


def _scaled_identity_family(m, rng):
    """A user operator family: m rows of a random orthonormal 12 x 12 basis."""
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    return q[:m]


def _my_pinv(Phi, Y, k):
    """A user algorithm: least squares (min-norm), ignores k."""
    A = Phi.to_dense()
    return Y.reshape(Y.shape[0], -1) @ np.linalg.pinv(A).T


def test_callable_operator_and_algorithm():
    r = phase_transition(operator=_scaled_identity_family, measurements=[6, 12], ks=[1, 2],
                         algorithms=["iht", _my_pinv], trials=5, rng=0, progress=False)
    assert r.algorithms == ("iht", "_my_pinv") and r.operator == "_scaled_identity_family"
    # with all 12 orthonormal rows every method recovers every code; with 6 the minimum-norm
    # least-squares solution of a random 1-sparse code is never exact
    assert (r.success[:, 1, :] == 1).all()
    assert (r.success[1, 0, :] == 0).all()
    with pytest.raises(ValueError, match="returned codes of shape"):
        phase_transition(operator=_scaled_identity_family, measurements=[6], ks=[1],
                         algorithms=[lambda Phi, Y, k: Y], trials=2, rng=0, progress=False)


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(operator="fourier"), ValueError, "'operator'"),
        (dict(operator=3), TypeError, "'operator'"),
        (dict(operator="gaussian"), ValueError, "'K' is for operator='conv'"),
        (dict(algorithms=[3]), TypeError, "algorithms"),
        (dict(measurements=[3]), ValueError, "'measurements' is for"),
    ],
)
def test_operator_family_errors(change, exc, match):
    with pytest.raises(exc, match=match):
        phase_transition(**{**SMALL, **change})
