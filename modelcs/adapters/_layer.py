"""The adapter's common currency: one trained convolution layer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._padding import Pads, normalize_padding, same_padding
from .._validation import as_int_tuple, check_positive_int
from ..operators.conv import ConvOperator

__all__ = ["ConvLayer", "missing_extra"]

_SAME = ("same", "same_lower")


def missing_extra(module: str, extra: str, what: str) -> ImportError:
    """The ImportError raised when an optional reader is not installed."""
    return ImportError(
        f"{what} needs the optional package '{module}', which is not installed: "
        f"pip install 'modelcs[{extra}]'",
        name=module,
    )


def _norm_padding(padding: Any, d: int) -> Pads | str:
    """Per-axis (before, after) pairs, or 'same' / 'same_lower' (resolved per input size)."""
    return normalize_padding(padding, d, _SAME)


@dataclass(frozen=True)
class ConvLayer:
    """One convolution layer of a trained network, in PyTorch's conventions.

    Parameters
    ----------
    name : str
        The layer's name in its source (module path, state-dict prefix, ONNX node or Keras
        layer name).
    filters : numpy.ndarray, shape ``(K, M/groups, l)`` or ``(K, M/groups, l1, l2)``
        The filter bank in ``OIL`` / ``OIHW`` layout (converted from the source's layout).
    bias : numpy.ndarray of shape ``(K,)`` or None
    stride : tuple of int
    padding : tuple of (before, after) int pairs, or ``'same'`` / ``'same_lower'``
        Zero padding per spatial axis.  ``'same'`` (TensorFlow's / ONNX ``SAME_UPPER``: the odd
        sample goes after) and ``'same_lower'`` (ONNX ``SAME_LOWER``) depend on the input size
        and are resolved by :meth:`padding_for`.
    dilation : tuple of int
        Supported: :meth:`operator` inserts ``dilation - 1`` zeros between taps (an exact
        rewrite: a dilated convolution is an ordinary one with a zero-stuffed kernel).
    groups : int
    geometry : {'source', 'default', 'override'}
        Where stride/padding came from: read from the source (torch modules, ONNX, Keras),
        defaults (stride 1, no padding, groups 1 -- bare state dicts, ``.npz``,
        ``.safetensors``), or given by the caller.
    extra : dict
        Source details (the state-dict key, ONNX weight name, Keras class and layout, ...);
        not compared.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs.adapters import ConvLayer
    >>> w = np.ones((4, 3, 3, 3), dtype=np.float32)
    >>> layer = ConvLayer("conv", w, None, stride=(2, 2), padding=1)
    >>> layer.padding, layer.kernel_size
    (((1, 1), (1, 1)), (3, 3))
    >>> W = layer.operator((3, 32, 32))
    >>> W.out_shape
    (4, 16, 16)
    """

    name: str
    filters: np.ndarray
    bias: np.ndarray | None = None
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    geometry: str = "source"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.filters)
        if w.ndim not in (3, 4):
            raise ValueError(
                f"layer {self.name!r}: filters must have shape (K, M/groups, l) or "
                f"(K, M/groups, l1, l2); got shape {w.shape}"
            )
        if w.dtype.kind != "f":
            raise TypeError(f"layer {self.name!r}: filters must be floating; got {w.dtype}")
        d = w.ndim - 2
        object.__setattr__(self, "filters", w)
        if self.bias is not None:
            b = np.asarray(self.bias)
            if b.shape != (w.shape[0],):
                raise ValueError(
                    f"layer {self.name!r}: bias must have shape ({w.shape[0]},) to match filters "
                    f"{w.shape}; got {b.shape}"
                )
            object.__setattr__(self, "bias", b)
        object.__setattr__(self, "stride", as_int_tuple("stride", self.stride, d))
        object.__setattr__(self, "dilation", as_int_tuple("dilation", self.dilation, d))
        object.__setattr__(self, "padding", _norm_padding(self.padding, d))
        groups = check_positive_int("groups", self.groups)
        if w.shape[0] % groups:
            raise ValueError(
                f"layer {self.name!r}: groups={groups} must divide the number of filters "
                f"K={w.shape[0]}"
            )
        if self.geometry not in ("source", "default", "override"):
            raise ValueError(
                f"parameter 'geometry' must be 'source', 'default' or 'override'; "
                f"got {self.geometry!r}"
            )

    # ------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        """Number of spatial axes (1 or 2)."""
        return self.filters.ndim - 2

    @property
    def out_channels(self) -> int:
        """``K``, the number of filters."""
        return int(self.filters.shape[0])

    @property
    def in_channels(self) -> int:
        """``M``, the number of input channels (``filters.shape[1] * groups``)."""
        return int(self.filters.shape[1]) * self.groups

    @property
    def kernel_size(self) -> tuple[int, ...]:
        """Spatial size ``l`` of one filter (before dilation)."""
        return tuple(int(s) for s in self.filters.shape[2:])

    @property
    def effective_kernel_size(self) -> tuple[int, ...]:
        """``(l - 1) * dilation + 1`` per axis."""
        pairs = zip(self.kernel_size, self.dilation, strict=True)
        return tuple((la - 1) * r + 1 for la, r in pairs)

    def dilated_filters(self) -> np.ndarray:
        """The filters with ``dilation - 1`` zeros between taps (the filters if undilated)."""
        if all(r == 1 for r in self.dilation):
            return self.filters
        out = np.zeros(self.filters.shape[:2] + self.effective_kernel_size, self.filters.dtype)
        idx = (slice(None), slice(None)) + tuple(slice(None, None, r) for r in self.dilation)
        out[idx] = self.filters
        return out

    def padding_for(self, input_spatial: Sequence[int]) -> Pads:
        """Per-axis (before, after) zero padding for an input of spatial size ``D``."""
        if not isinstance(self.padding, str):
            return tuple(self.padding)
        if len(input_spatial) != self.ndim:
            raise ValueError(
                f"parameter 'input_spatial' must have {self.ndim} entries for layer "
                f"{self.name!r}; got {tuple(input_spatial)!r}"
            )
        return same_padding(input_spatial, self.effective_kernel_size, self.stride,
                            lower=self.padding == "same_lower")

    # --------------------------------------------------------------- operator
    def operator(
        self, input_shape: int | Sequence[int], *, dtype: Any = None, engine: str = "auto"
    ) -> ConvOperator:
        """The linear part of the layer, ``x -> W x``, as a :class:`~modelcs.ConvOperator`.

        Parameters
        ----------
        input_shape : int or tuple of int
            Spatial shape ``D`` or the full ``(M, *D)`` of one input.
        dtype : float32 or float64, optional
            Defaults to the filters' dtype (float16 / bfloat16-derived weights become float32).
        engine : str
            Passed to :class:`~modelcs.ConvOperator`.

        Notes
        -----
        The bias is not part of the (linear) operator: the layer computes ``W @ x + b``
        with ``b`` broadcast over the spatial axes (``bias[:, None, None]`` in 2-D).
        """
        if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
            input_shape = (int(input_shape),)
        shape = tuple(int(s) for s in input_shape)  # type: ignore[union-attr]
        if len(shape) not in (self.ndim, self.ndim + 1):
            raise ValueError(
                f"parameter 'input_shape' must be the spatial shape ({self.ndim} ints) or "
                f"(M, *D) ({self.ndim + 1} ints) for layer {self.name!r}; got {input_shape!r}"
            )
        spatial = shape[-self.ndim :]
        if dtype is None:
            dtype = self.filters.dtype if self.filters.dtype.itemsize >= 4 else np.float32
        return ConvOperator(
            self.dilated_filters(),
            shape,
            stride=self.stride,
            padding=self.padding_for(spatial),
            groups=self.groups,
            dtype=dtype,
            engine=engine,
        )

    def __call__(self, x: Any) -> Any:
        """The layer's affine map ``W x + b`` on ``(M, *D)`` or ``(B, M, *D)`` input."""
        x = np.asarray(x)
        if x.ndim not in (self.ndim + 1, self.ndim + 2):
            raise ValueError(
                f"parameter 'x' must have shape (M, *D) or (B, M, *D) with {self.ndim} spatial "
                f"axes for layer {self.name!r}; got shape {x.shape}"
            )
        if x.shape[-self.ndim - 1] != self.in_channels:
            raise ValueError(
                f"parameter 'x' must have {self.in_channels} channels (axis {-self.ndim - 1}) "
                f"for layer {self.name!r}; got shape {x.shape}"
            )
        W = self.operator(x.shape[-self.ndim - 1 :])
        out = W @ x
        if self.bias is not None:
            out = out + self.bias.astype(out.dtype).reshape((-1,) + (1,) * self.ndim)
        return out

    def __repr__(self) -> str:
        pad = self.padding if isinstance(self.padding, str) else list(self.padding)
        return (
            f"ConvLayer({self.name!r}, filters={self.filters.shape}, "
            f"bias={'yes' if self.bias is not None else 'no'}, stride={self.stride}, "
            f"padding={pad}, dilation={self.dilation}, groups={self.groups}, "
            f"geometry={self.geometry!r}, n_params={math.prod(self.filters.shape)})"
        )
