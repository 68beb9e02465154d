"""The one padding parser, shared by :class:`~modelcs.ConvOperator` and the adapters.

A padding is ``'valid'``, a mode name (``'same'``, ``'same_lower'``, ``'circular'`` -- each
caller says which it supports), a non-negative int (symmetric, every axis), or per-axis
ints or ``(before, after)`` pairs.  ``'same'`` is TensorFlow's / ONNX ``SAME_UPPER`` rule
(the odd sample goes after), ``'same_lower'`` ONNX ``SAME_LOWER``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["Pads", "normalize_padding", "parse_padding", "same_padding"]

Pads = tuple[tuple[int, int], ...]
_ALIASES = {"same_upper": "same"}


def _nonneg_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 0


def normalize_padding(padding: Any, d: int, modes: Sequence[str]) -> Pads | str:
    """Per-axis ``(before, after)`` pairs, or one of ``modes`` (lower case) for a mode name.

    ``'valid'`` is always accepted (all zeros).  Raises ``ValueError`` naming ``padding``.
    """
    if isinstance(padding, str):
        p = _ALIASES.get(padding.lower(), padding.lower())
        if p == "valid":
            return tuple((0, 0) for _ in range(d))
        if p in modes:
            return p
        raise ValueError(
            f"parameter 'padding' must be one of {['valid', *modes]}, a non-negative int or "
            f"a tuple of {d} non-negative ints or (before, after) pairs; got {padding!r}"
        )
    if _nonneg_int(padding):
        return tuple((int(padding), int(padding)) for _ in range(d))
    if isinstance(padding, (tuple, list)) and len(padding) == d:
        pairs = []
        for p in padding:
            if _nonneg_int(p):
                pairs.append((int(p), int(p)))
            elif isinstance(p, (tuple, list)) and len(p) == 2 and all(_nonneg_int(q) for q in p):
                pairs.append((int(p[0]), int(p[1])))
            else:
                break
        else:
            return tuple(pairs)
    raise ValueError(
        f"parameter 'padding' must be {', '.join(repr(m) for m in ['valid', *modes])}, a "
        f"non-negative int, or a tuple of {d} non-negative ints or (before, after) pairs; "
        f"got {padding!r}"
    )


def same_padding(D: Sequence[int], l: Sequence[int], t: Sequence[int], *,
                 lower: bool = False) -> Pads:
    """Zero padding giving ``n = ceil(D / t)`` outputs per axis (odd sample after, or before
    with ``lower``), for effective kernel sizes ``l`` and strides ``t``."""
    pads = []
    for Da, la, ta in zip(D, l, t, strict=True):
        n = -(-int(Da) // int(ta))
        total = max((n - 1) * int(ta) + int(la) - int(Da), 0)
        small, big = total // 2, total - total // 2
        pads.append((big, small) if lower else (small, big))
    return tuple(pads)


def parse_padding(padding: Any, d: int, D: tuple[int, ...], l: tuple[int, ...],
                  t: tuple[int, ...]) -> tuple[str, Pads]:
    """``(mode, pairs)`` for a :class:`~modelcs.ConvOperator`: ``mode`` is ``'zeros'`` or
    ``'circular'``; ``'same'`` is resolved for input size ``D``."""
    p = normalize_padding(padding, d, ("same", "circular"))
    if p == "circular":
        return "circular", tuple((0, 0) for _ in range(d))
    if p == "same":
        return "zeros", same_padding(D, l, t)
    assert not isinstance(p, str)
    return "zeros", p
