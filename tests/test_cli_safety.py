"""The command line's contract: bad input is one line on stderr with exit status 2 (never a
traceback); unexpected errors keep their traceback; outputs never overwrite existing files
without --force and never write through symbolic links; subcommands are registered
explicitly; one size syntax; --filters reads every format the adapters read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import modelcs
from modelcs import ConvOperator
from modelcs.cli import main

pytest.importorskip("matplotlib")

import hostile_audit as audit  # noqa: E402  (tests/ is on sys.path)

DEMO_SMALL = ["--trials", "20", "--iht-iters", "0", "--draws", "1", "--delta-budget", "10",
              "--tables", "none", "--no-progress"]
PHASE_SMALL = ["--K", "4", "--l", "3", "--D", "8", "--ks", "1", "--channels", "2",
               "--algorithms", "iht", "--trials", "2", "--no-progress"]


def call(argv, capsys):
    """Exit status and stderr of ``modelcs argv`` run in this process."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse-level errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("badfiles")
    w = ConvOperator.random(4, 2, 3, 9, rng=0).filters
    good = d / "good.npz"
    np.savez(good, filters=w)
    data = good.read_bytes()
    (d / "truncated.npz").write_bytes(data[: len(data) // 2])
    (d / "corrupt.npz").write_bytes(audit._flip(data, data.index(w.tobytes()[:8]) + 4))
    (d / "huge_header.npz").write_bytes(audit._npz_member(
        "filters.npy", audit._npy_header((10**6, 10**6, 5)) + w.tobytes()))
    (d / "bomb.npz").write_bytes(audit._zip_bomb("filters.npy",
                                                 audit._npy_header((64, 1024, 1024)),
                                                 256 * audit.MB))
    (d / "adir.npz").mkdir()
    os.mkfifo(d / "fifo.npz")
    os.symlink("/dev/zero", d / "zero.npz")
    (d / "empty.onnx").write_bytes(b"")
    (d / "weights.txt").write_text("3 4 5")
    existing = d / "existing-file"
    existing.write_text("keep me")
    return d


BAD = [
    # the eight of issue 18
    (["demo", "--out", "{d}/existing-file", *DEMO_SMALL], "not a directory"),
    (["phase", "--out", "{d}/existing-file", *PHASE_SMALL], "not a directory"),
    (["rip", "--filters", "{d}/adir.npz", "--D", "9"], "directory"),
    (["rip", "--filters", "{d}/truncated.npz", "--D", "9"], "truncated.npz"),
    (["rip", "--filters", "{d}/corrupt.npz", "--D", "9"], "CRC"),
    (["rip", "--filters", "{d}/huge_header.npz", "--D", "9"], "declares shape"),
    (["rip", "--filters", "{d}/bomb.npz", "--D", "9"], "compression bomb"),
    (["rip", "--K", "100000", "--M", "10000"], "--K 100000 --M 10000"),
    # more hostile input
    (["rip", "--filters", "{d}/fifo.npz", "--D", "9"], "FIFO"),
    (["rip", "--filters", "{d}/zero.npz", "--D", "9"], "character device"),
    (["coherence", "--filters", "{d}/bomb.npz"], "compression bomb"),
    (["coherence", "--filters", "{d}/empty.onnx"], "empty"),
    (["coherence", "--filters", "{d}/weights.txt"], "unknown file type"),
    (["coherence", "--filters", "{d}/missing.npz"], "not found"),
    (["rip", "--trials", "1000000000000"], "--trials 1000000000000"),
    (["rip", "--l", "3x3x3"], "--l"),
    (["rip", "--D", "0x4"], "--D"),
    (["phase", "--l", "axb", "--out", "{d}/p"], "--l"),
    (["phase", "--trials", "1000000000000", "--ks", "1", "--channels", "2", "--out",
      "{d}/p"], "trials=1000000000000"),
    (["demo", "--tables", "lenet", "--out", "{d}/x"], "unknown table"),
    (["nonsense"], "invalid choice"),
    (["--bogus"], "unrecognized"),
]


@pytest.mark.parametrize("argv, match", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_invocation_is_one_line_exit_2(argv, match, bad_files, capsys):
    argv = [a.format(d=bad_files) for a in argv]
    code, err = call(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("modelcs") and "error:" in lines[0], err
    assert match in lines[0], err
    assert (bad_files / "existing-file").read_text() == "keep me"


def test_unexpected_errors_keep_their_traceback(monkeypatch, capsys):
    """Only modelcs' ValueErrors about user input become one line; bugs propagate."""

    def register(sub):
        p = sub.add_parser("boom")
        p.add_argument("kind")
        p.set_defaults(func=lambda args: RAISE[args.kind]())

    def type_error():
        raise TypeError("a bug")

    def numpy_value_error():
        np.zeros(3).reshape(2, 2)  # a ValueError raised inside NumPy: a bug, not input

    def library_value_error():
        ConvOperator.random(2, 1, 3, 8, rng=0).normalized().with_filters(np.ones((2, 2)))

    RAISE = {"type": type_error, "numpy": numpy_value_error, "lib": library_value_error}
    monkeypatch.setattr(modelcs.cli, "SUBCOMMANDS", (*modelcs.cli.SUBCOMMANDS, register))
    with pytest.raises(TypeError, match="a bug"):
        main(["boom", "type"])
    with pytest.raises(ValueError, match="reshape"):
        main(["boom", "numpy"])
    code, err = call(["boom", "lib"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"modelcs {modelcs.__version__}"


def test_subcommands_registered_explicitly_and_broken_import_fails_loudly():
    mods = [r.__module__ for r in modelcs.cli.SUBCOMMANDS]
    assert mods[:3] == ["modelcs.experiments.figure2", "modelcs.experiments.coherence_tables",
                        "modelcs.experiments.phase.cli"]
    assert all(m.startswith("modelcs.") for m in mods)
    helptext = modelcs.cli.build_parser().format_help()
    for name in ("demo", "rip", "coherence", "phase"):
        assert name in helptext
    # a broken internal import (the old CLI skipped the subcommand and carried on)
    code = ("import sys, modelcs\n"
            "for m in ('modelcs.cli', 'modelcs.experiments.figure2',\n"
            "          'modelcs.experiments.coherence_tables'):\n"
            "    sys.modules.pop(m, None)\n"
            "sys.modules['modelcs.experiments.coherence_tables'] = None\n"
            "import modelcs.cli\n"
            "print('imported')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "imported" not in p.stdout
    assert "ModuleNotFoundError" in p.stderr and "coherence_tables" in p.stderr


def test_one_size_syntax(capsys):
    for spec in ("3x3", "3,3"):
        code, err = call(["rip", "--K", "4", "--M", "2", "--l", spec, "--D", "8x8", "--k", "2",
                          "--trials", "5", "--json"], capsys)
        assert code == 0, err


# -------------------------------------------------------------------- outputs
def test_demo_refuses_existing_outputs_without_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("mine")
    (out / "figure2.png").write_text("mine too")
    code, err = call(["demo", "--out", str(out), *DEMO_SMALL], capsys)
    assert code == 2 and "--force" in err and "summary.json" in err and "figure2.png" in err
    assert (out / "summary.json").read_text() == "mine"
    assert sorted(os.listdir(out)) == ["figure2.png", "summary.json"]  # nothing staged left
    code, err = call(["demo", "--out", str(out), "--force", *DEMO_SMALL], capsys)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["setting"]["n_trials"] == 20
    assert (out / "figure2.png").read_bytes()[:4] == b"\x89PNG"
    assert not [n for n in os.listdir(out) if n.startswith(".modelcs-")]


def test_phase_refuses_existing_outputs_without_force(tmp_path, capsys):
    (tmp_path / "phase.png").write_text("mine")
    code, err = call(["phase", "--out", str(tmp_path), *PHASE_SMALL], capsys)
    assert code == 2 and "phase.png" in err and "--force" in err
    assert (tmp_path / "phase.png").read_text() == "mine"
    assert not (tmp_path / "phase.json").exists()
    code, err = call(["phase", "--out", str(tmp_path), "--force", *PHASE_SMALL], capsys)
    assert code == 0, err
    assert (tmp_path / "phase.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("force", [False, True])
def test_symlink_in_output_folder_is_not_followed(tmp_path, capsys, force):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "summary.md")
    os.symlink(tmp_path / "nowhere.json", out / "summary.json")  # dangling link
    argv = ["demo", "--out", str(out), *DEMO_SMALL] + (["--force"] if force else [])
    code, err = call(argv, capsys)
    assert outside.read_text() == "precious"
    assert not (tmp_path / "nowhere.json").exists()
    if force:
        assert code == 0, err
        assert not os.path.islink(out / "summary.md")  # the link itself was replaced
        assert "## Figure 2" in (out / "summary.md").read_text()
    else:
        assert code == 2 and "summary.md" in err and "summary.json" in err
        assert os.path.islink(out / "summary.md")


# ---------------------------------------------------------- --filters formats
def test_filters_in_every_adapter_format(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.numpy")
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    w = ConvOperator.random(6, 2, 3, 12, rng=1).filters.astype(np.float32)
    files = {}
    files["w.npy"] = tmp_path / "w.npy"
    np.save(files["w.npy"], w)
    files["w.safetensors"] = tmp_path / "w.safetensors"
    st.save_file({"conv.weight": w, "conv.bias": np.zeros(6, np.float32)},
                 str(files["w.safetensors"]))
    files["w.pt"] = tmp_path / "w.pt"
    torch.save({"conv.weight": torch.from_numpy(w)}, files["w.pt"])
    node = helper.make_node("Conv", ["x", "cw"], ["y"], name="c1")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, None)],
                          [helper.make_tensor_value_info("y", 1, None)],
                          [numpy_helper.from_array(w, "cw")])
    files["w.onnx"] = tmp_path / "w.onnx"
    onnx.save(helper.make_model(g), files["w.onnx"])
    ref = None
    for name, path in files.items():
        argv = ["coherence", "--filters", str(path), "--json", "--D", "12"]
        if name == "w.onnx":
            argv += ["--key", "c1"]
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, (name, out.err)
        res = json.loads(out.out)
        assert res["filters"] == [6, 2, 3], name
        ref = res["no_shifts"]["mean"] if ref is None else ref
        assert res["no_shifts"]["mean"] == pytest.approx(ref), name


def test_filters_from_a_keras_h5_layer(tmp_path, capsys):
    pytest.importorskip("h5py")
    path = tmp_path / "m.h5"
    audit._keras_h5(str(path), fletcher32=True)
    assert main(["coherence", "--filters", str(path), "--key", "conv", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["filters"] == [4, 2, 3, 3]
