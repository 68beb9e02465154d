"""Helpers shared by the ``modelcs`` subcommands: option types, the filter-bank options,
reading a filter bank from any weights file, safe output folders, and the error rule.

The error rule (used by :func:`modelcs.cli.main`): an exception is the user's mistake --
one line on stderr, exit status 2 -- when it is

* a ``ValueError`` raised by modelcs itself (the innermost frame is in the ``modelcs``
  package): the library's messages about arguments, :class:`~modelcs.UnsafeFileError`
  refusals of a file and memory-budget refusals are all of this kind;
* an ``OSError`` about a path the user named (``FileNotFoundError``, ``FileExistsError``,
  ``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``);
* an ``ImportError`` of an optional third-party package (its message says which extra to
  install).

Anything else -- a ``TypeError``, a ``ValueError`` from inside NumPy, an ``ImportError`` of
a modelcs module -- is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._memory import check_elements, file_budget

__all__ = [
    "add_bank_arguments",
    "add_output_arguments",
    "bank_from_args",
    "broadcast_option",
    "check_batch",
    "is_user_error",
    "load_filters",
    "one_line_errors",
    "positive_int",
    "size_arg",
    "size_tuple",
    "staged_output",
    "stride_option",
]

_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                PermissionError)


def _raised_in_modelcs(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("modelcs")


def is_user_error(exc: BaseException) -> bool:
    """True when ``exc`` is a mistake in the user's input (see the module docstring)."""
    if isinstance(exc, ValueError):
        return _raised_in_modelcs(exc)
    if isinstance(exc, _PATH_ERRORS):
        return True
    if isinstance(exc, ImportError):
        name = exc.name or ""
        return bool(name) and not name.startswith("modelcs")
    return False


# ------------------------------------------------------------------- option types
def one_line_errors(p: argparse.ArgumentParser, prog: str) -> None:
    """Make argparse errors of this subcommand a single line (exit status 2)."""

    def error(message: str) -> Any:
        print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
        raise SystemExit(2)

    p.error = error  # type: ignore[method-assign]


def size_tuple(text: str) -> tuple[int, ...]:
    """argparse type for a 1-D or 2-D size: ``"3"``, ``"3,3"`` or ``"3x3"`` (the one size
    syntax of every subcommand)."""
    parts = str(text).lower().replace("x", ",").split(",")
    try:
        vals = tuple(int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size like 3, 3x3 or 3,3; got {text!r}"
        ) from None
    if not vals or len(vals) > 2 or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(
            f"expected 1 or 2 positive integers (e.g. 3, 3x3 or 3,3); got {text!r}"
        )
    return vals


def size_arg(text: str) -> int | tuple[int, ...]:
    """:func:`size_tuple`, with a single size as a plain int."""
    vals = size_tuple(text)
    return vals[0] if len(vals) == 1 else vals


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return v


# -------------------------------------------------------------------- filter banks
_WEIGHT_EXTS = (".npz", ".npy", ".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".onnx",
                ".h5", ".hdf5")


def _arrays_of(path: str, max_bytes: int | None) -> dict[str, np.ndarray]:
    """Every array of a weights file, read with the adapters' safe readers."""
    from . import _safeio
    from .adapters import conv_layers
    from .adapters.arrays import load_safetensors, to_numpy_array

    ext = os.path.splitext(path)[1].lower()
    budget = file_budget(max_bytes)
    if ext == ".npz":
        return _safeio.read_npz(path, max_bytes=budget)
    if ext == ".npy":
        return {"(array)": _safeio.read_npy(path, max_bytes=budget)}
    if ext == ".safetensors":
        out = load_safetensors(path, max_bytes=budget)
    elif ext in (".pt", ".pth", ".bin", ".ckpt"):
        from .adapters.torch import load_state_dict

        out = dict(load_state_dict(path, max_bytes=budget))
    elif ext in (".onnx", ".h5", ".hdf5"):
        return {name: layer.filters for name, layer in
                conv_layers(path, max_bytes=budget).items()}
    else:
        raise ValueError(f"--filters {path}: unknown file type {ext!r}; expected one of "
                         f"{', '.join(_WEIGHT_EXTS)}")
    arrays = {}
    for k, v in out.items():
        a = to_numpy_array(v)
        if a is not None:
            arrays[str(k)] = a
    return arrays


def load_filters(path: str, key: str | None = None, *,
                 max_bytes: int | None = None) -> np.ndarray:
    """A filter bank ``(K, M, *l)`` from any weights file the adapters read.

    ``.npz`` / ``.npy``, ``.safetensors``, ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` (the
    safe torch path) and the conv layers of ``.onnx`` / ``.h5`` models, all through the
    checked readers (regular files only, memory budget, no unpickling).  ``key`` selects
    the array (a layer name for ONNX / HDF5); without it the file must hold one candidate
    (3-D or 4-D real array), or one named ``filters`` or ``weight``.
    """
    if not os.path.lexists(path):
        raise FileNotFoundError(f"filters file not found: {path}")
    arrays = _arrays_of(path, max_bytes)
    names = list(arrays)
    if key is None:
        cands = [k for k, a in arrays.items() if a.ndim in (3, 4) and a.dtype.kind in "fiu"]
        if len(names) == 1:
            key = names[0]
        elif len(cands) == 1:
            key = cands[0]
        else:
            key = next((k for k in ("filters", "weight") if k in names), None)
            if key is None:
                raise ValueError(f"{path} holds arrays {names}; choose one with --key")
    if key not in arrays:
        raise ValueError(f"{path} has no array {key!r}; it holds {names}")
    w = arrays[key]
    if w.ndim not in (3, 4) or w.dtype.kind not in "fiu":
        raise ValueError(
            f"array {key!r} in {path} must be real filters (K, M, l) or (K, M, l1, l2); got "
            f"shape {w.shape}, dtype {w.dtype}"
        )
    return w


def add_bank_arguments(p: argparse.ArgumentParser, *, K: int, M: int, l: str, D: str) -> None:
    """Options that define a filter bank: sizes for random filters, or a file."""
    g = p.add_argument_group("filter bank (random Gaussian, scaled 1/sqrt(M l), or a file)")
    g.add_argument("--filters", metavar="FILE",
                   help="filters (K, M, l) or (K, M, l1, l2) from .npz, .npy, .safetensors, "
                   ".pt/.pth, or a conv layer of .onnx/.h5 (choose it with --key)")
    g.add_argument("--key", help="array (or layer) name inside FILE")
    g.add_argument("--K", type=positive_int, default=K, help=f"number of filters (default {K})")
    g.add_argument("--M", type=positive_int, default=M, help=f"input channels (default {M})")
    g.add_argument("--l", type=size_tuple, default=size_tuple(l),
                   help=f"filter size, e.g. 5, 3x3 or 3,3 (default {l})")
    g.add_argument("--D", type=size_tuple, default=None,
                   help=f"input size, e.g. 32 or 14x14 (default {D} for random filters)")
    g.add_argument("--stride", type=size_tuple, default=(1,), help="stride (default 1)")
    g.add_argument("--padding", choices=("valid", "same", "circular"), default="valid",
                   help="boundary (default valid, the papers')")


def bank_from_args(args: argparse.Namespace, rng: np.random.Generator,
                   default_D: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """Filters (from the file or random) and the input size from parsed options."""
    if args.filters is not None:
        w = load_filters(args.filters, args.key)
        return w, args.D
    d = len(args.l)
    D = broadcast_option(args.D if args.D is not None else default_D[:1], d, "--D")
    D = (D,) if isinstance(D, int) else D
    L = math.prod(args.l)
    check_elements(f"random filters --K {args.K} --M {args.M} --l {'x'.join(map(str, args.l))}",
                   args.K * args.M * L, copies=2)
    w = rng.standard_normal((args.K, args.M, *args.l)) / math.sqrt(args.M * L)
    return w, D


def check_batch(option: str, n: int, W: Any) -> None:
    """Refuse early when ``n`` codes of ``W`` and their signals do not fit in memory."""
    check_elements(f"{option} {n}: codes {tuple(W.out_shape)} and signals {tuple(W.in_shape)}",
                   n * (math.prod(W.out_shape) + math.prod(W.in_shape)), W.dtype, copies=4)


def broadcast_option(v: tuple[int, ...], d: int, name: str) -> Any:
    """An option value for ``d`` spatial axes (one int repeats); a plain int in 1-D.

    ``name`` is the option as the user typed it (``"--D"``), used in the error message.
    """
    full = v * d if len(v) == 1 else v
    if len(full) != d:
        raise ValueError(f"{name} {','.join(map(str, v))} does not match {d}-D filters")
    return full[0] if d == 1 else full


def stride_option(args: argparse.Namespace, w: np.ndarray) -> Any:
    """The ``--stride`` option for the spatial axes of the filters ``w``."""
    return broadcast_option(args.stride, w.ndim - 2, "--stride")


# ----------------------------------------------------------------- output folders
def add_output_arguments(p: argparse.ArgumentParser, default: str, what: str) -> None:
    """``--out DIR`` and ``--force`` (replace existing output files)."""
    p.add_argument("--out", default=default,
                   help=f"output directory for {what} (default {default}); existing output "
                   "files are refused unless --force")
    p.add_argument("--force", action="store_true",
                   help="replace existing output files in --out (links are replaced, never "
                   "written through)")


def _check_out_dir(out: str) -> None:
    if os.path.lexists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out} exists and is not a directory")


@contextlib.contextmanager
def staged_output(out: str, names: Sequence[str], *, force: bool = False) -> Iterator[str]:
    """A private folder inside ``out`` to write into; its files move into ``out`` at the end.

    Before anything runs, refuses (``FileExistsError``) when ``out`` is not a directory or
    when one of ``names`` already exists there (a file, a folder or a symbolic link) and
    ``force`` is false.  Files are moved with ``os.replace``, which replaces a directory
    entry and never writes through a symbolic link; nothing outside ``out`` is touched.
    On an error the staged files are discarded.
    """
    _check_out_dir(out)
    os.makedirs(out, exist_ok=True)
    _refuse_existing(out, names, force)
    stage = tempfile.mkdtemp(prefix=".modelcs-", dir=out)
    try:
        yield stage
        produced = sorted(os.listdir(stage))
        _refuse_existing(out, produced, force)  # anything created meanwhile
        for name in produced:
            dest = os.path.join(out, name)
            if os.path.isdir(dest) and not os.path.islink(dest):
                raise FileExistsError(f"{dest} is a directory; refusing to replace it")
            os.replace(os.path.join(stage, name), dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _refuse_existing(out: str, names: Sequence[str], force: bool) -> None:
    existing = [n for n in names if os.path.lexists(os.path.join(out, n))]
    if force:
        dirs = [n for n in existing if os.path.isdir(os.path.join(out, n))
                and not os.path.islink(os.path.join(out, n))]
        if dirs:
            raise FileExistsError(f"--out {out} has directories named like outputs: {dirs}")
        return
    if existing:
        raise FileExistsError(
            f"--out {out} already holds {', '.join(existing)}; pass --force to replace them"
        )
