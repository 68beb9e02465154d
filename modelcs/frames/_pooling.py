"""Pooling-window geometry shared by :mod:`.crelu` and :mod:`.theory` (not public API).

CReLU paper (Shang, Sohn, Almeida and Lee, *Understanding and Improving Convolutional Neural
Networks via Concatenated Rectified Linear Units*), supplement A.2: max pooling over
'valid' windows of a filter's response map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_int_tuple

__all__ = ["pool_geometry", "pooling_windows"]


def pooling_windows(n: tuple[int, ...], pool: tuple[int, ...], stride: tuple[int, ...]) -> Any:
    """Flat indices into ``n`` of every pooling window: ``(P, Lw)`` and the pooled grid."""
    d = len(n)
    p = tuple((n[a] - pool[a]) // stride[a] + 1 for a in range(d))
    starts = np.stack(np.meshgrid(*[np.arange(pa) * sa for pa, sa in zip(p, stride, strict=True)],
                                  indexing="ij"), axis=-1).reshape(-1, d)
    offs = np.stack(np.meshgrid(*[np.arange(q) for q in pool], indexing="ij"),
                    axis=-1).reshape(-1, d)
    pos = starts[:, None, :] + offs[None, :, :]  # (P, Lw, d)
    flat = np.ravel_multi_index(tuple(pos[..., a] for a in range(d)), n)
    return flat, p


def pool_geometry(
    n: tuple[int, ...], pool: Any, stride: Any
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Pooling window and stride per axis for a response grid ``n`` (checked).

    ``pool=None`` pools the whole map (window ``n``, stride ``n``; ``stride`` must then be
    None); otherwise ``stride`` defaults to the window (non-overlapping regions).
    """
    d = len(n)
    if pool is None:
        if stride is not None:
            raise ValueError("parameter 'stride' needs 'pool'; pool=None pools the whole map")
        return n, n
    pl = as_int_tuple("pool", pool, d)
    st = pl if stride is None else as_int_tuple("stride", stride, d)
    for a in range(d):
        if pl[a] > n[a]:
            raise ValueError(
                f"parameter 'pool'={pl} is larger than the response grid n={n} along axis {a}"
            )
    return pl, st
