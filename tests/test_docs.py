"""The documentation covers every public name, and docstrings are complete and self-contained.

* Every public name of ``modelcs``, ``modelcs.adapters`` and ``modelcs.experiments`` (their
  ``__all__``) is listed in the generated API reference (``docs/apigen.py``, which writes
  the autosummary pages Sphinx turns into one page per name) under a topic.
* Its docstring, parsed by numpydoc, has Parameters, Returns and Examples sections
  (classes: Parameters and Examples); the examples themselves run as doctests of the suite.
* No docstring (public or private, modules included) and no example script names a file
  outside the repository: the papers are cited by authors, title and section.

The Sphinx build itself (warnings are errors) is ``make docs-fast``, part of ``make test``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

apigen = pytest.importorskip("apigen")
docscrape = pytest.importorskip("numpydoc.docscrape")

PUBLIC = [
    f"{package}.{name}" for package in apigen.PACKAGES for name in apigen.public_names(package)
]


def _obj(qualname: str):
    package, name = qualname.rsplit(".", 1)
    return getattr(importlib.import_module(package), name)


def test_packages_declare_their_public_names():
    # __all__ is the one list the docs (and `from modelcs import *`) read; it must name
    # only attributes that exist
    for package in apigen.PACKAGES:
        mod = importlib.import_module(package)
        for name in getattr(mod, "__all__", []):
            assert hasattr(mod, name), f"{package}.__all__ names {name!r}, which is missing"
    assert len(PUBLIC) > 30


def test_every_public_name_has_an_api_page_under_a_topic():
    documented = apigen.documented_names()
    assert set(documented) == set(PUBLIC)
    listed = {qual for entries in apigen.api_entries().values() for qual, _ in entries}
    missing = [q for q, page in documented.items() if page not in listed]
    assert not missing, f"public names without an API page: {missing}"
    other = [q for q, _ in apigen.api_entries().get("other", [])]
    assert not other, (
        f"public names whose module no topic claims: {other} (defined in "
        f"{[apigen.defining_module(*q.rsplit('.', 1)) for q in other]}); add the module "
        "prefix to a topic of TOPICS in docs/apigen.py"
    )
    pages = apigen.render_pages()
    text = "\n".join(pages.values())
    for qual in listed:
        assert re.search(rf"^   {re.escape(qual)}$", text, re.M), qual
    # the index lists every topic page that exists
    for fname in pages:
        if fname != "index.rst":
            assert f"   {fname[:-4]}" in pages["index.rst"]


def test_generated_pages_match_what_is_written(tmp_path: Path):
    # the writer writes exactly the rendered text, and rewriting is a no-op
    paths = apigen.write_api_pages(tmp_path)
    rendered = apigen.render_pages()
    rendered["module_map.inc"] = apigen.render_module_map(ROOT)
    assert sorted(p.name for p in paths) == sorted(rendered)
    for p in paths:
        assert p.read_text() == rendered[p.name]


def test_module_map_places_every_module_in_a_layer():
    # the design notes' module table (generated from the source) lists every module of
    # the package under one of the layers; a new module path outside them fails here
    text = apigen.render_module_map(ROOT)
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "modelcs").rglob("*.py")
    }
    for name in modules:
        assert f"``{name}``" in text, name
    assert "unassigned" not in text, text


def _sections(obj) -> tuple[list[str], object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpydoc warns on unknown sections; we check below
        if inspect.isclass(obj):
            doc = docscrape.ClassDoc(obj, config={"show_class_members": False})
            required = ["Parameters", "Examples"]
        else:
            doc = docscrape.FunctionDoc(obj)
            required = ["Parameters", "Returns", "Examples"]
    if not inspect.isclass(obj):
        try:
            if not inspect.signature(obj).parameters:
                required.remove("Parameters")  # nothing to document
        except (TypeError, ValueError):
            pass
    missing = []
    for section in required:
        if section == "Returns" and (doc["Returns"] or doc["Yields"]):
            continue
        if not doc[section]:
            missing.append(section)
    return missing, doc


@pytest.mark.parametrize("qualname", PUBLIC)
def test_docstring_has_parameters_returns_examples(qualname: str):
    obj = _obj(qualname)
    assert inspect.getdoc(obj), f"{qualname} has no docstring"
    missing, doc = _sections(obj)
    assert not missing, f"{qualname}: docstring lacks section(s) {missing}"
    examples = "\n".join(doc["Examples"])
    assert ">>>" in examples, f"{qualname}: the Examples section has no doctest (>>>)"


def test_section_check_catches_a_missing_section():
    # the check above could fail: a docstring without Returns/Examples is caught
    def f(x):
        """Do something.

        Parameters
        ----------
        x : int
            A number.
        """
        return x

    assert _sections(f)[0] == ["Returns", "Examples"]


OUTSIDE = re.compile(r"\b00[0-4]_|(?<![\w/])DESIGN\.md|\.\./shared|\b[Ii]ssue\s+#?\d+")


def _docstrings(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [tree, *ast.walk(tree)]
    for node in nodes:
        if isinstance(
            node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        ):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "name", "<module>"), doc


SOURCES = sorted((ROOT / "modelcs").rglob("*.py")) + sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_no_docstring_names_a_file_outside_the_repository(path: Path):
    bad = [
        f"{name}: ...{doc[max(0, m.start() - 40): m.end() + 20]!r}..."
        for name, doc in _docstrings(path)
        for m in OUTSIDE.finditer(doc)
    ]
    assert not bad, f"{path.relative_to(ROOT)} cites files outside the repository: {bad}"


def test_docs_sources_name_no_file_outside_the_repository():
    texts = [*DOCS.glob("*.rst"), *DOCS.glob("*.md"), *(DOCS / "tutorials_src").glob("*.py"),
             ROOT / "README.md", ROOT / "examples" / "README.md"]
    bad = [str(p.relative_to(ROOT)) for p in texts if p.exists() and OUTSIDE.search(p.read_text())]
    assert not bad, f"these pages cite files outside the repository: {bad}"


def test_outside_pattern_catches_the_old_citations():
    for text in ("see ``003_...``", "(DESIGN.md Sec. 1)", "`../shared/DESIGN.md`", "issue 8"):
        assert OUTSIDE.search(text), text
    assert not OUTSIDE.search("Gilbert et al., Towards Understanding the Invertibility, Sec. 3")


TUTORIALS = sorted((DOCS / "tutorials_src").glob("tutorial_*.py"))


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(script: Path, tmp_path: Path):
    # the tutorials are gallery pages executed by `make docs`; here they run as scripts at
    # reduced size (MODELCS_EXAMPLE_SMALL=1), as the examples do in test_examples.py
    import os

    env = dict(os.environ, MODELCS_EXAMPLE_SMALL="1", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{script.name}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"{script.name} printed nothing"


def test_gallery_headers_have_a_title():
    # sphinx-gallery needs a reST title as the first docstring lines of every page
    for path in [*sorted((ROOT / "examples").glob("[0-9][0-9]_*.py")), *TUTORIALS]:
        doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
        lines = doc.strip("\n").splitlines()
        assert len(lines) >= 2 and set(lines[1]) == {"="} and len(lines[1]) >= len(
            lines[0].strip()
        ), f"{path.name}: the docstring must start with a title underlined by '='"


def test_browser_check_reports_console_errors_and_offsite_requests():
    # docs/check_browser.py (make docs-check) turns DevTools events into problems; a clean
    # page gives none, and each kind of failure is reported
    import check_browser

    origin = "http://127.0.0.1:8000/"
    clean = [
        {"method": "Network.requestWillBeSent", "params": {"request": {"url": origin + "x.js"}}},
        {"method": "Runtime.consoleAPICalled", "params": {"type": "log", "args": []}},
        {"method": "Network.responseReceived",
         "params": {"response": {"status": 200, "url": origin + "x.js"}}},
    ]
    assert check_browser.problems_from_events(clean, origin) == []
    bad = [
        {"method": "Network.requestWillBeSent",
         "params": {"request": {"url": "https://cdn.example.org/mathjax.js"}}},
        {"method": "Runtime.exceptionThrown",
         "params": {"exceptionDetails": {"exception": {"description": "TypeError: x"}}}},
        {"method": "Runtime.consoleAPICalled",
         "params": {"type": "error", "args": [{"value": "boom"}]}},
        {"method": "Network.responseReceived",
         "params": {"response": {"status": 404, "url": origin + "missing.png"}}},
    ]
    problems = check_browser.problems_from_events(bad, origin)
    assert len(problems) == 4
    assert "leaves the local site" in problems[0] and "TypeError" in problems[1]
    assert "boom" in problems[2] and "404" in problems[3]


def test_gallery_scripts_do_not_raise_systemexit_on_success():
    # sphinx-gallery executes the scripts inside the Sphinx process: a `sys.exit(main())`
    # or `raise SystemExit(...)` under `if __name__ == "__main__":` ends the whole docs
    # build, silently and with status 0
    for path in [*sorted((ROOT / "examples").glob("[0-9][0-9]_*.py")), *TUTORIALS]:
        source = path.read_text()
        # sphinx-gallery also runs them with an empty __doc__
        assert "__doc__.splitlines()[0]" not in source, (
            f"{path.name}: __doc__ is '' under sphinx-gallery; use __doc__.partition('\\n')[0]"
        )
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                code = ast.unparse(node)
                assert "SystemExit" not in code and "sys.exit" not in code, (
                    f"{path.name}: call main() without SystemExit/sys.exit at the end"
                )
