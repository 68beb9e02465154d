"""Generate the API reference pages from the packages' ``__all__``.

``conf.py`` calls :func:`write_api_pages` before Sphinx reads the sources, so every public
name of ``modelcs``, ``modelcs.adapters`` and ``modelcs.experiments`` gets an autosummary
entry (and through it its own page) without anybody editing a list by hand.  Names are
grouped by topic from the module that defines them; a name from a module that no topic
claims yet lands in "Other public names" (still documented, and ``tests/test_docs.py``
reports it so that a topic can be chosen).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

#: The packages whose public names are documented, in page order.
PACKAGES = ("modelcs", "modelcs.adapters", "modelcs.experiments")

#: (slug, title, introduction, module prefixes) -- the first matching prefix wins, so list
#: specific prefixes before general ones.  Mirrors the README's "What is inside" table.
TOPICS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "operators",
        "Operators",
        "Linear operators: the multichannel convolution ``W`` (a CNN layer's linear part), "
        "its adjoint ``Phi = W.T`` and the conversion of what a user has (arrays, SciPy, "
        "PyLops-like objects, torch) into one operator type.",
        ("modelcs.operators",),
    ),
    (
        "models",
        "Sparsity models",
        "Projections onto the sets of sparse codes: plain top-k, block sparsity and the "
        "model-k-sparse codes of the invertibility paper (one nonzero per filter block or "
        "pooling region).",
        ("modelcs.models",),
    ),
    (
        "recovery",
        "Recovery algorithms",
        "Solvers for ``y = Phi z`` with ``z`` sparse: (model-based) IHT, CoSaMP, the Lasso and "
        "Algorithm 2 of the invertibility paper, and the CNN layer seen as one IHT step.",
        ("modelcs.recovery",),
    ),
    (
        "rip",
        "RIP, coherence and bounds",
        "Model-RIP ratios, restricted isometry constants, coherence and the theorem "
        "calculators of the invertibility paper.",
        ("modelcs.rip", "modelcs.mutual_coherence", "modelcs.theory"),
    ),
    (
        "frames",
        "Frames and CReLU",
        "Concatenated ReLU, frame bounds, singular values of convolutions and pseudoinverse "
        "reconstruction (CReLU paper).",
        ("modelcs.frames",),
    ),
    (
        "preimages",
        "ReLU preimages",
        "When is the input of a ReLU layer determined by its output? Preimage kinds, points "
        "and linearisations (invariance and inverse stability paper).",
        ("modelcs.relu", "modelcs.preimage", "modelcs.preimages"),
    ),
    (
        "networks",
        "Trained networks",
        "Reading trained weights (torch, ONNX, Keras, safetensors, npz; files are checked "
        "before anything is loaded) and whole sequential networks, and inverting them "
        "layer by layer.",
        ("modelcs.adapters", "modelcs.inversion", "modelcs.invert", "modelcs.network",
         "modelcs._safeio"),
    ),
    (
        "experiments",
        "Experiments",
        "Reproductions of the papers' figures and tables and phase-transition sweeps "
        "(locally or on Dask).",
        ("modelcs.experiments",),
    ),
)

OTHER = ("other", "Other public names", "Public names whose module no topic claims yet.")


def public_names(package: str) -> list[str]:
    """The public names of ``package``: its ``__all__``, or failing that its non-underscore,
    non-module attributes."""
    mod = importlib.import_module(package)
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [
            n
            for n in dir(mod)
            if not n.startswith("_") and not inspect.ismodule(getattr(mod, n))
        ]
    return sorted(set(names), key=lambda n: (n[0].islower(), n.lower()))


def defining_module(package: str, name: str) -> str:
    """The module a public name is defined in (``__module__``), or ``package``."""
    obj = getattr(importlib.import_module(package), name)
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) and module.startswith("modelcs") else package


def topic_of(package: str, name: str) -> str:
    """The topic slug of a public name (``'other'`` when no topic claims its module)."""
    module = defining_module(package, name)
    for slug, _title, _intro, prefixes in TOPICS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return slug
    return OTHER[0]


def api_entries() -> dict[str, list[tuple[str, str]]]:
    """``{topic slug: [(qualified name, defining module), ...]}`` over :data:`PACKAGES`.

    A name exported by several packages (``modelcs.phase_transition`` and
    ``modelcs.experiments.phase_transition``) is documented once, under its first package.
    """
    seen: dict[int, str] = {}
    out: dict[str, list[tuple[str, str]]] = {}
    for package in PACKAGES:
        mod = importlib.import_module(package)
        for name in public_names(package):
            obj = getattr(mod, name)
            qual = f"{package}.{name}"
            if id(obj) in seen and not isinstance(obj, (int, float, str)):
                continue
            seen[id(obj)] = qual
            out.setdefault(topic_of(package, name), []).append(
                (qual, defining_module(package, name))
            )
    return out


def documented_names() -> dict[str, str]:
    """``{qualified public name: the documented name of the same object}`` for every
    public name of every package (aliases map to the page that documents the object)."""
    pages: dict[int, str] = {}
    for entries in api_entries().values():
        for qual, _ in entries:
            package, name = qual.rsplit(".", 1)
            pages[id(getattr(importlib.import_module(package), name))] = qual
    out = {}
    for package in PACKAGES:
        mod = importlib.import_module(package)
        for name in public_names(package):
            out[f"{package}.{name}"] = pages.get(id(getattr(mod, name)), "")
    return out


def _topic_page(title: str, intro: str, entries: list[tuple[str, str]]) -> str:
    lines = [
        ".. This page is generated by docs/apigen.py from the packages' __all__; do not edit.",
        "",
        title,
        "=" * len(title),
        "",
        intro,
        "",
        ".. autosummary::",
        "   :toctree: generated",
        "   :nosignatures:",
        "",
    ]
    lines += [f"   {qual}" for qual, _module in entries]
    return "\n".join(lines) + "\n"


def render_pages() -> dict[str, str]:
    """``{file name: reStructuredText}`` of the API index and one page per topic."""
    entries = api_entries()
    pages: dict[str, str] = {}
    toc = []
    for slug, title, intro, _prefixes in (*TOPICS, (*OTHER, ())):
        if slug not in entries:
            continue
        pages[f"{slug}.rst"] = _topic_page(title, intro, entries[slug])
        toc.append(slug)
    index = [
        ".. This page is generated by docs/apigen.py from the packages' __all__; do not edit.",
        "",
        "API reference",
        "=============",
        "",
        "Every public name of ``modelcs`` (the flat API), ``modelcs.adapters`` and "
        "``modelcs.experiments``, grouped by topic. Each page gives the definition or the "
        "objective in mathematics, the paper's equation, algorithm or theorem, references "
        "and an example that runs (the examples are doctests of the test suite).",
        "",
        ".. toctree::",
        "   :maxdepth: 2",
        "",
        *[f"   {slug}" for slug in toc],
        "",
    ]
    pages["index.rst"] = "\n".join(index)
    return pages


def write_api_pages(outdir: str | Path) -> list[Path]:
    """Write :func:`render_pages` into ``outdir`` (only files whose text changed, so Sphinx
    does not rebuild what did not change); return the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    pages = render_pages()
    # autosummary stubs of names that are no longer public (or moved) would be orphans
    current = {qual for entries in api_entries().values() for qual, _ in entries}
    for stub in (outdir / "generated").glob("*.rst"):
        if stub.stem not in current:
            stub.unlink()
    # included by docs/design.rst (not a page of its own: the .inc suffix is not read)
    pages["module_map.inc"] = render_module_map(Path(__file__).resolve().parent.parent)
    for fname, text in pages.items():
        path = outdir / fname
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


#: The layers of the package, bottom to top: a module imports only from its own layer or
#: the layers below (``tests/test_architecture.py`` checks the private-import half of it).
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("0  shared helpers", "private modules every layer may use: array-module dispatch and "
     "dtypes, argument checks, safe file reading and memory budgets, progress bars",
     ("modelcs._",)),
    ("1  operators", "the linear maps: the operator base class, the convolution, wrappers",
     ("modelcs.operators",)),
    ("2  sparsity models", "projections onto sets of sparse codes",
     ("modelcs.models",)),
    ("3  algorithms and theory", "recovery solvers, RIP and coherence, frames and CReLU, "
     "ReLU preimages", ("modelcs.recovery", "modelcs.rip", "modelcs.frames", "modelcs.relu",
                        "modelcs.preimage", "modelcs.preimages", "modelcs.coherence",
                        "modelcs.mutual_coherence", "modelcs.theory")),
    ("4  trained networks", "weights and networks from files and modules; inversion",
     ("modelcs.adapters", "modelcs.inversion", "modelcs.network")),
    ("5  experiments and plots", "reproductions of the papers' figures and tables, sweeps",
     ("modelcs.experiments", "modelcs.plotting")),
    ("6  command line", "the ``modelcs`` command", ("modelcs.cli", "modelcs.__main__")),
)


def _module_summary(path: Path) -> str:
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    return first.replace("|", "\\|") or "(no module docstring)"


def _claims(prefix: str, name: str) -> bool:
    if prefix.endswith("_"):  # "modelcs._": private helper modules, not dunder modules
        return name.startswith(prefix) and not name.startswith(prefix + "_")
    return name == prefix or name.startswith(prefix + ".")


def render_module_map(root: str | Path) -> str:
    """A reST table of every module of the package, by layer, with its docstring's first
    paragraph (read from the source, so module splits and renames show up by themselves)."""
    pkg = Path(root) / "modelcs"
    rows: list[tuple[str, str, str]] = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        layer = next(
            (title for title, _d, prefixes in LAYERS if any(_claims(p, name) for p in prefixes)),
            "  (top)" if name == "modelcs" else "?  unassigned",
        )
        rows.append((layer, name, _module_summary(path)))
    rows.sort(key=lambda r: (r[0], r[1]))
    out = [".. list-table::", "   :header-rows: 1", "   :widths: 18 27 55", "",
           "   * - layer", "     - module", "     - what it holds"]
    for layer, name, summary in rows:
        out += [f"   * - {layer.split('  ', 1)[-1]}", f"     - ``{name}``", f"     - {summary}"]
    return "\n".join(out) + "\n"
