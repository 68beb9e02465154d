"""Tests for the ``modelcs`` command line: ``demo``, ``rip`` and ``coherence``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from modelcs import ConvOperator, coherence
from modelcs.cli import main

pytest.importorskip("matplotlib")


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _no_constants(name):
    raise AssertionError(f"summary.json holds {name}, which is not valid JSON")


def one_line_error(err, prog):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"modelcs {prog}: error:"), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------- rip
def test_rip_json_defaults_are_figure2(capsys):
    code, out, err = run(["rip", "--trials", "200", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["operator"]["filters"] == [96, 32, 5]
    assert res["operator"]["codes"] == [96, 28]
    assert res["trials"] == 200
    assert abs(res["isometry"]["mean"] - 1) < 0.03
    assert abs(res["restricted_gram"]["mean"] - 1) < 0.04
    assert res["gram"]["mean"] > 1.5
    assert res["one_step_error_fixed"]["median"] > res["one_step_error_known"]["median"]


def test_rip_text_2d_pooled_with_delta(capsys):
    argv = ["rip", "--K", "6", "--M", "3", "--l", "3,3", "--D", "8,8", "--k", "4",
            "--pool", "2,2", "--trials", "30", "--delta-search", "adversarial",
            "--delta-trials", "40", "--seed", "3"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "codes (6, 6, 6)" in out
    assert "pool=(2, 2)" in out
    assert "delta_k >=" in out and "adversarial search over 40 supports" in out


def test_rip_seed_reproducible(capsys):
    argv = ["rip", "--trials", "20", "--json", "--seed", "4", "--K", "8", "--D", "12", "--k", "3"]
    a = run(argv, capsys)
    b = run(argv, capsys)
    ja, jb = json.loads(a[1]), json.loads(b[1])
    assert ja["isometry"] == jb["isometry"]


def test_rip_filters_file(tmp_path, capsys):
    w = ConvOperator.random(12, 4, 5, 20, rng=0).filters
    f = tmp_path / "bank.npz"
    np.savez(f, weight=w, bias=np.zeros(12))
    code, out, err = run(["rip", "--filters", str(f), "--D", "20", "--k", "3", "--trials",
                          "10", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["operator"]["filters"] == [12, 4, 5]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--K", "-3"], "--K"),
        (["--K", "x"], "--K"),
        (["--l", "1,2,3"], "--l"),
        (["--pool", "0"], "--pool"),
        (["--delta-search", "magic"], "--delta-search"),
        (["--low", "nan"], "--low"),
        (["--trials", "0"], "--trials"),
        (["--k", "200"], "exceeds"),
        (["--low", "1", "--high", "0"], "--low"),
        (["--l", "3,3", "--D", "8,8,8"], "--D"),
        (["--D", "3"], "kernel size"),
        (["--pool", "2,2"], "--pool"),
        (["--filters", "does-not-exist.npz", "--D", "32"], "not found"),
    ],
)
def test_rip_bad_arguments_one_line(argv, match, capsys):
    try:
        code = main(["rip", *argv])
    except SystemExit as exc:  # argparse-level errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert match in one_line_error(err, "rip")


def test_bad_npz_files_one_line(tmp_path, capsys):
    obj = tmp_path / "obj.npz"
    np.savez(obj, filters=np.array([{"a": 1}], dtype=object))
    two = tmp_path / "two.npz"
    np.savez(two, a=np.ones((2, 2, 3)), b=np.ones((2, 2, 3)))
    flat = tmp_path / "flat.npz"
    np.savez(flat, filters=np.ones((4, 3)))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    cases = [
        (["rip", "--filters", str(obj), "--D", "9"], "pickle"),
        (["rip", "--filters", str(two), "--D", "9"], "--key"),
        (["rip", "--filters", str(two), "--key", "c", "--D", "9"], "no array 'c'"),
        (["rip", "--filters", str(flat), "--D", "9"], "(K, M, l)"),
        (["rip", "--filters", str(junk), "--D", "9"], "junk.npz"),
        (["rip", "--filters", str(two), "--key", "a"], "--D"),
        (["coherence", "--filters", str(obj)], "pickle"),
    ]
    for argv, match in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert match in one_line_error(err, argv[0]), argv
    assert main(["rip", "--filters", str(two), "--key", "a", "--D", "9", "--k", "1",
                 "--trials", "5"]) == 0


# ---------------------------------------------------------------------- coherence
def test_coherence_random_matches_library(capsys):
    code, out, err = run(["coherence", "--K", "8", "--M", "4", "--l", "3", "--D", "10",
                          "--draws", "2", "--seed", "5", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    rng = np.random.default_rng(5)
    for i in range(2):
        w = rng.standard_normal((8, 4, 3)) / math.sqrt(12)
        assert res["no_shifts"]["draws"][i] == pytest.approx(coherence(w, shifts=False))
        assert res["shifts"]["draws"][i] == pytest.approx(coherence(w, input_shape=10))


def test_coherence_filters_file_exact(tmp_path, capsys):
    w = np.zeros((2, 1, 3))
    w[0, 0] = [1, 0, 0]
    w[1, 0] = [0, 1, 1]
    f = tmp_path / "w.npz"
    np.savez(f, w)
    code, out, err = run(["coherence", "--filters", str(f)], capsys)
    assert code == 0, err
    assert "filters only    : 0.0000" in out
    assert "all shifted rows: 0.7071" in out
    code, out, err = run(["coherence", "--filters", str(f), "--D", "9", "--stride", "3",
                          "--shifts", "yes", "--json"], capsys)
    res = json.loads(out)
    assert res["shifts"]["mean"] == 0.0 and "no_shifts" not in res


def test_coherence_table_alexnet(capsys):
    code, out, err = run(["coherence", "--table", "alexnet", "--draws", "1", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    rows = res["rows"]
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert rows[0]["paper_random"] == 0.1996
    for r in rows:  # random banks: ours within 30 % of the paper's random-filter values
        assert abs(r["no_shifts"]["mean"] / r["paper_random"] - 1) < 0.3
        assert r["shifts"]["mean"] >= r["no_shifts"]["mean"] - 1e-6


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--draws", "0"], "--draws"),
        (["--table", "resnet"], "--table"),
        (["--shifts", "maybe"], "--shifts"),
        (["--padding", "same", "--filters", "x.npz"], "not found"),
        (["--stride", "1,1,1"], "--stride"),
        (["--l", "3,3", "--D", "2"], "kernel size"),
    ],
)
def test_coherence_bad_arguments_one_line(argv, match, capsys):
    try:
        code = main(["coherence", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert match in one_line_error(capsys.readouterr().err, "coherence")


# --------------------------------------------------------------------------- demo
def test_demo_small_writes_figures_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--trials", "60", "--iht-iters", "4", "--draws", "1",
            "--delta-budget", "40", "--tables", "alexnet", "--seed", "2"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert err == ""  # no progress bar when stderr is not a terminal
    names = {"figure2.png", "delta_search.png", "coherence_tables.png",
             "iht_error_iterations.png", "summary.json", "summary.md"}
    assert names <= set(os.listdir(out))
    for n in names:
        if n.endswith(".png"):
            data = (out / n).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    s = json.loads((out / "summary.json").read_text(), parse_constant=_no_constants)
    f2 = s["figure2"]
    assert abs(f2["a_isometry"]["mean"] - 1) < 0.05
    assert f2["c_one_step_known"]["median"] < f2["c_one_step_fixed"]["median"]
    assert f2["c_iht"]["median"] < f2["c_one_step_known"]["median"]
    assert len(s["iht_error_median_per_iteration"]) == 4
    assert s["delta_estimates"]["delta_k_adversarial"] >= s["delta_estimates"]["delta_k_random"]
    assert [t["name"] for t in s["coherence_tables"]] == ["Table 6: AlexNet"]
    md = (out / "summary.md").read_text()
    assert "## Figure 2" in md and "Table 6: AlexNet" in md and "0.1996" in md
    assert "(a) mean" in stdout


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--tables", "lenet"], "unknown table"),
        (["--trials", "-1"], "--trials"),
        (["--iht-iters", "-2"], "--iht-iters"),
        (["--seed", "x"], "--seed"),
    ],
)
def test_demo_bad_arguments_one_line(argv, match, tmp_path, capsys):
    try:
        code = main(["demo", "--out", str(tmp_path / "d"), *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert match in one_line_error(capsys.readouterr().err, "demo")
    assert not (tmp_path / "d").exists()


def test_console_errors_are_one_line_without_traceback():
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run(
        [sys.executable, "-m", "modelcs", "rip", "--k", "0"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert "--k" in p.stderr


def test_demo_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    pytest.importorskip("tqdm")
    import io

    from modelcs.experiments.figure2 import run_demo

    class Tty(io.StringIO):
        def isatty(self):
            return True

    kw = dict(n_trials=30, iht_iters=2, draws=1, delta_budget=20, tables=())
    fake = Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    run_demo(str(tmp_path / "a"), **kw)
    assert "modelcs demo" in fake.getvalue() and "%|" in fake.getvalue()
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    run_demo(str(tmp_path / "b"), **kw)
    assert plain.getvalue() == ""
