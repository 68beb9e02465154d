"""Every numbered teaching example runs offline at reduced size and writes a figure.

Examples are discovered as ``examples/[0-9][0-9]_*.py``; each runs in a fresh interpreter
with ``MODELCS_EXAMPLE_SMALL=1`` (reduced sizes), the Agg backend and ``--out tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("[0-9][0-9]_*.py"))
TIMEOUT = 180  # seconds; the target is < 15 s each at reduced size on a quiet machine


def test_examples_are_discovered():
    # the phase-transition example is always there; numbering is two digits + underscore
    assert any(p.name == "03_phase_transition.py" for p in EXAMPLES)
    prefixes = [p.name[:2] for p in EXAMPLES]
    assert len(prefixes) == len(set(prefixes)), f"duplicate example numbers: {prefixes}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_writes_a_png(script: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["MODELCS_EXAMPLE_SMALL"] = "1"
    env["MPLBACKEND"] = "Agg"
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, (
        f"{script.name} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
        f"\n--- stderr\n{proc.stderr[-3000:]}"
    )
    pngs = list(out.rglob("*.png")) if out.exists() else []
    assert pngs, f"{script.name} wrote no PNG into --out {out}; stdout:\n{proc.stdout[-2000:]}"
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{p} is not a PNG"
    assert proc.stdout.strip(), f"{script.name} printed nothing (examples say what they show)"
