"""The one progress bar shared by the long-running jobs (modelcs._progress)."""

import io
import sys

import pytest

from modelcs._progress import progress_bar, wants_progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_by_default(monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress_bar(5, desc="x", progress=None).enabled
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    with progress_bar(5, desc="my job", unit="cell", leave=True) as bar:
        assert bar.enabled and bar.total == 5
        for i in range(5):
            bar.update(label=f"item {i}")
    out = tty.getvalue()
    assert "my job" in out and "5/5" in out and "item 4" in out
    assert not progress_bar(5, desc="x", progress=False).enabled


def test_progress_true_forces_the_bar_and_false_silences_it(monkeypatch):
    pytest.importorskip("tqdm")
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    with progress_bar(3, desc="forced", progress=True) as bar:
        bar.update(3)
    assert "forced" in plain.getvalue()
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    with progress_bar(3, desc="quiet", progress=False) as bar:
        bar.update(3, label="ignored")
    assert quiet.getvalue() == ""


def test_progress_argument_is_checked():
    assert wants_progress(True) and not wants_progress(False)
    with pytest.raises(TypeError, match="'progress'.*True, False or None.*str"):
        wants_progress("yes")  # type: ignore[arg-type]
