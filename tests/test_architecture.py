"""Modules talk through public seams: no private name crosses a module boundary.

An AST walk over ``modelcs/`` fails on

* ``from .x import _name`` / ``from modelcs.x import _name`` (a private name of another
  module), unless ``x`` is one of the shared-helper modules listed in :data:`SHARED`
  (modules whose name starts with ``_`` exist to be shared);
* ``obj._name`` (or ``getattr(obj, "_name")``) where ``_name`` is not an attribute of the
  accessing module's own classes: reaching into the private state of another module's
  object or module (``self._x`` / ``cls._x`` / ``super()._x`` inside a class are fine, so
  is ``other._x`` of a name the same module defines; dunder names are fine).

A second walk over ``tests/`` fails when a test patches a private attribute
(``monkeypatch.setattr(obj, "_x", ...)``, ``monkeypatch.setattr("pkg.mod._x", ...)``,
``mock.patch(...)`` of such a path, or ``obj._x = ...``).

Known violations that other work in flight removes are listed, with their owner, in
:data:`ALLOWED` / :data:`ALLOWED_TEST_PATCHES`: the lists may only shrink, and an entry that
no longer occurs fails the test so that it is removed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "modelcs"
TESTS = ROOT / "tests"

# Shared-helper modules: their names start with "_" and every module may import from them.
SHARED = {
    "modelcs._backend",
    "modelcs._validation",
    "modelcs._progress",
    "modelcs._krylov",
    "modelcs._safeio",
    "modelcs._memory",
    "modelcs._parallel",
    "modelcs._padding",
    "modelcs._cli",
    "modelcs.frames._pooling",
    "modelcs.adapters._layer",
    "modelcs.recovery._common",
}

# Underscore names that are public API of the standard library (namedtuple methods,
# interpreter hooks).
STDLIB_PUBLIC = {"_replace", "_fields", "_asdict", "_make", "_field_defaults", "_getframe"}

# (module, private name) still crossing a boundary, with the helper whose work removes it.
# Only ever remove entries.
ALLOWED: dict[tuple[str, str], str] = {}

# (test file, private attribute) patched by a test, with the owner of the fix.
ALLOWED_TEST_PATCHES: dict[tuple[str, str], str] = {}


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """Absolute dotted name of the module ``node`` imports from."""
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_module(dotted: str, root: Path) -> bool:
    rel = Path(*dotted.split("."))
    return (root / rel.with_suffix(".py")).exists() or (root / rel / "__init__.py").exists()


def _own_attributes(tree: ast.AST) -> set[str]:
    """Private attribute names of the module's own classes and objects.

    Methods and class-level names of classes defined in the module, and attributes the
    module assigns (``self._x = ...``, ``new._cache = ...``).  Module-level functions do
    not count: they are used by bare name, so ``obj._helper`` is someone else's.
    """
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    out.add(item.name)
                elif isinstance(item, ast.Assign):
                    out.update(t.id for t in item.targets if isinstance(t, ast.Name))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    out.add(item.target.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
    return {n for n in out if _is_private(n)}


def _is_own(value: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: access inside the object's own class hierarchy."""
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "super"
    )


def private_crossings(path: Path, root: Path = ROOT) -> list[tuple[str, str, int]]:
    """``(module, private name, line)`` for every private name ``path`` takes from elsewhere."""
    module = _module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _own_attributes(tree)
    found: list[tuple[str, str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, path, node)
            if source in SHARED:
                continue
            for alias in node.names:
                if not _is_private(alias.name):
                    continue
                sub = f"{source}.{alias.name}"
                if _is_module(sub, root) and sub in SHARED:
                    continue  # `from . import _pooling`: a shared-helper module
                found.append((module, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if any(_is_private(p) for p in parts) and alias.name not in SHARED:
                    found.append((module, alias.name, node.lineno))
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            if _is_own(node.value) or node.attr in own or node.attr in STDLIB_PUBLIC:
                continue
            if any(s.rsplit(".", 1)[-1] == node.attr for s in SHARED):
                continue  # `frames._pooling`: a shared-helper module reached as an attribute
            found.append((module, node.attr, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
            and not _is_own(node.args[0])
            and node.args[1].value not in own
        ):
            found.append((module, node.args[1].value, node.lineno))  # getattr(op, "_x")
    return found


def _package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _all_crossings() -> list[tuple[str, str, int]]:
    return [c for path in _package_files() for c in private_crossings(path)]


def test_no_module_uses_another_modules_private_names():
    crossings = _all_crossings()
    new = [c for c in crossings if (c[0], c[1]) not in ALLOWED]
    assert not new, (
        "private names used across modules (make them a public seam, or move shared "
        "helpers to a module whose name starts with '_' and list it in SHARED):\n"
        + "\n".join(f"  {m}:{line} uses {name}" for m, name, line in new)
    )


def test_allowlist_only_shrinks():
    seen = {(m, name) for m, name, _ in _all_crossings()}
    stale = sorted(set(ALLOWED) - seen)
    assert not stale, f"fixed, remove from ALLOWED: {stale}"


def test_shared_helper_modules_exist_and_are_named_private():
    for name in SHARED:
        assert name.rsplit(".", 1)[-1].startswith("_"), name
        assert _is_module(name, ROOT), f"{name} is listed in SHARED but does not exist"


# ------------------------------------------------------------------ the walk itself
def _crossings_of(source: str, tmp_path: Path, name: str = "mod.py") -> list[str]:
    pkg = tmp_path / "modelcs"
    pkg.mkdir(exist_ok=True)
    (pkg / "other.py").write_text("")
    path = pkg / name
    path.write_text(source)
    return [n for _, n, _ in private_crossings(path, tmp_path)]


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from .other import _helper\n", ["_helper"]),
        ("from modelcs.other import _helper\n", ["_helper"]),
        ("from .other import public\n", []),
        ("from ._validation import check_rng\n", []),
        ("from ._validation import _private_but_shared\n", []),
        ("import modelcs.other as o\nx = o._hidden\n", ["_hidden"]),
        ("def f(op):\n    return op._Dp\n", ["_Dp"]),
        ("class A:\n    def f(self):\n        return self._x + super()._y\n", []),
        ("class A:\n    def __init__(self):\n        self._x = 1\n"
         "    def same(self, other):\n        return other._x\n", []),
        ("def f(W):\n    return W.__class__, W.__dict__\n", []),
        ("def _prepare(x):\n    return x\n\ndef f(model):\n    return model._prepare(1)\n",
         ["_prepare"]),
        ("def f(t):\n    return t._replace(a=1)\n", []),
        ('def f(op):\n    return getattr(op, "_mode", None)\n', ["_mode"]),
    ],
)
def test_the_walk_catches_reach_ins_and_spares_own_names(source, expected, tmp_path):
    assert _crossings_of(source, tmp_path) == expected


# -------------------------------------------------------------- tests patch nothing
_PATCHERS = {"setattr", "patch", "object", "setitem", "delattr"}


def _string_parts(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.split(".")
    return []


def private_patches(path: Path) -> list[tuple[str, str, int]]:
    """``(test file, private attribute, line)`` for every private attribute a test patches."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in _PATCHERS or name == "setitem":
                continue
            for arg in node.args[:2]:
                for part in _string_parts(arg):
                    if _is_private(part):
                        found.append((path.name, part, node.lineno))
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and _is_private(t.attr) and not _is_own(t.value):
                    found.append((path.name, t.attr, node.lineno))
    return found


def _all_patches() -> list[tuple[str, str, int]]:
    return [p for path in sorted(TESTS.glob("*.py")) for p in private_patches(path)]


def test_no_test_patches_a_private_attribute():
    new = [p for p in _all_patches() if (p[0], p[1]) not in ALLOWED_TEST_PATCHES]
    assert not new, "tests patching private attributes (test through public seams):\n" + "\n".join(
        f"  {f}:{line} patches {name}" for f, name, line in new
    )
    stale = sorted(set(ALLOWED_TEST_PATCHES) - {(f, n) for f, n, _ in _all_patches()})
    assert not stale, f"fixed, remove from ALLOWED_TEST_PATCHES: {stale}"


@pytest.mark.parametrize(
    "source, expected",
    [
        ('def test(monkeypatch, m):\n    monkeypatch.setattr(m, "_shape", 1)\n', ["_shape"]),
        ('def test(monkeypatch):\n    monkeypatch.setattr("modelcs.rip._KINDS", ())\n',
         ["_KINDS"]),
        ('from unittest import mock\nwith mock.patch("modelcs.x._y"):\n    pass\n', ["_y"]),
        ("def test(model):\n    model._shape = (3,)\n", ["_shape"]),
        ('def test(monkeypatch):\n    monkeypatch.setattr("sys.stderr.isatty", f)\n', []),
        ("class Op:\n    def __init__(self):\n        self._n = 0\n", []),
    ],
)
def test_the_patch_walk_catches_private_patches(source, expected, tmp_path):
    path = tmp_path / "test_x.py"
    path.write_text(source)
    assert [n for _, n, _ in private_patches(path)] == expected
