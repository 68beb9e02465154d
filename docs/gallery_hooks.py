"""Hooks of the sphinx-gallery build (a module of their own so Sphinx can pickle them)."""

from __future__ import annotations

import shutil
from pathlib import Path

GALLERY_OUT = Path(__file__).resolve().parent / "_build" / "gallery-output"


class PNGScraper:
    """Collect the PNG files an example writes into its ``--out`` directory.

    The examples save their figures with ``savefig`` (they run as scripts and in the
    tests), so the gallery picks up new PNG files rather than open matplotlib figures.
    """

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    def __repr__(self) -> str:  # stable repr: Sphinx hashes the configuration
        return "PNGScraper()"

    def __call__(self, block, block_vars, gallery_conf):  # noqa: ANN001
        from sphinx_gallery.scrapers import figure_rst

        out = GALLERY_OUT / Path(block_vars["src_file"]).stem
        if not out.exists():
            return ""  # a tutorial: its open figures go to the matplotlib scraper
        pngs = sorted(p for p in out.rglob("*.png") if self.seen.get(str(p)) != p.stat().st_mtime)
        paths = []
        for png, image_path in zip(pngs, block_vars["image_path_iterator"], strict=False):
            self.seen[str(png)] = png.stat().st_mtime
            shutil.copyfile(png, image_path)
            paths.append(image_path)
        if paths:
            # the example's figures are in its PNGs: close what it left open so the
            # matplotlib scraper (next in line, for the tutorials) does not show them twice
            import matplotlib.pyplot as plt

            plt.close("all")
        return figure_rst(paths, gallery_conf["src_dir"])


def reset_argv(gallery_conf, script_vars):  # noqa: ANN001
    """Each example writes into its own output directory under docs/_build."""
    out = GALLERY_OUT / Path(script_vars["src_file"]).stem
    if out.exists():
        shutil.rmtree(out)
    return ["--out", str(out)]


class ResetArgv:
    def __repr__(self) -> str:
        return "ResetArgv()"

    def __call__(self, gallery_conf, script_vars):  # noqa: ANN001
        return reset_argv(gallery_conf, script_vars)


