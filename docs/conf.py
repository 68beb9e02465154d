"""Sphinx configuration of the modelcs documentation.

Built by ``make docs`` (everything, gallery executed) and, fast, by ``make test``
(``-D plot_gallery=0 -W --keep-going``: examples not run, any warning fails).  Nothing is
fetched at build time: no intersphinx, and MathJax is served from the built site (copied
from the ``django-static-mathjax`` wheel, a plain copy of MathJax 3.2.2).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

from apigen import write_api_pages  # noqa: E402

import modelcs  # noqa: E402

project = "modelcs"
author = "the modelcs developers"
copyright = "the modelcs developers, BSD-3-Clause"
version = release = modelcs.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "sphinxcontrib.bibtex",
]

exclude_patterns = ["_build", "tutorials_src", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
root_doc = "index"

# sphinx-gallery writes its timing summary into the source tree and keeps rows of pages
# that no longer exist; start from none (it is regenerated at the end of the build).
(DOCS / "sg_execution_times.rst").unlink(missing_ok=True)

# -- API reference: pages generated from __all__ (docs/apigen.py) ------------------------
write_api_pages(DOCS / "api")
autosummary_generate = True
autosummary_generate_overwrite = True
autosummary_imported_members = True
autodoc_default_options = {"member-order": "groupwise"}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_use_plots = False

# -- maths: MathJax 3 served from _static/mathjax (no CDN) ------------------------------


def _vendor_mathjax() -> str:
    """Copy the parts of MathJax 3 this site uses into docs/_static/mathjax."""
    import mathjax  # the django-static-mathjax wheel (data only)

    src = Path(mathjax.__file__).parent / "static" / "mathjax"
    dst = DOCS / "_static" / "mathjax"
    # the combined TeX -> CommonHTML component, its fonts, and what it loads on demand
    # (TeX extensions by autoload, the context menu, accessibility); about 4 MB
    wanted = ["es5/tex-chtml.js", "es5/output/chtml", "es5/input", "es5/a11y", "es5/ui",
              "LICENSE"]
    for rel in wanted:
        s, d = src / rel, dst / rel
        if not s.exists() or d.exists():
            continue
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d)
        else:
            shutil.copy2(s, d)
    return "mathjax/es5/tex-chtml.js"


mathjax_path = _vendor_mathjax()
html_static_path = ["_static"]

# -- references ----------------------------------------------------------------------
bibtex_bibfiles = ["references.bib"]
bibtex_default_style = "plain"
bibtex_reference_style = "author_year"

# -- gallery: examples/ and the tutorials ------------------------------------------------
from gallery_hooks import PNGScraper, ResetArgv  # noqa: E402

sphinx_gallery_conf = {
    "examples_dirs": ["../examples", "tutorials_src"],
    "gallery_dirs": ["auto_examples", "tutorials"],
    "filename_pattern": r"/(\d\d_|tutorial_)",
    "ignore_pattern": r"__init__\.py|conftest\.py",
    "image_scrapers": (PNGScraper(), "matplotlib"),
    "reset_argv": ResetArgv(),
    "backreferences_dir": "api/generated/backreferences",
    "doc_module": ("modelcs",),
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_memory": False,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "capture_repr": (),
    "abort_on_example_error": True,
}

# -- HTML --------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"modelcs {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
    "icon_links": [],
    "use_edit_page_button": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "design": [], "reproduction": []}
html_context = {"default_mode": "light"}  # no empty theme mode (a console error otherwise)
html_favicon = "_static/favicon.svg"  # browsers ask for /favicon.ico otherwise (404)
html_show_sourcelink = False
smartquotes = False  # keep command lines literal: "--out" must not become an en dash
html_last_updated_fmt = ""

# Offline: no intersphinx, and no request for a version switcher or analytics.
intersphinx_mapping: dict = {}

# A build stamp for the closing note of `make docs`.
os.environ.setdefault("MODELCS_DOCS_STARTED", str(time.time()))
