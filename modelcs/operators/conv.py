"""Multichannel 1-D/2-D strided convolution as a linear operator.

``W @ x`` is the cross-correlation summed over input channels that
``torch.nn.functional.conv1d/conv2d`` compute; ``W.T @ z`` is its exact adjoint (the
transposed convolution).  As a matrix ``W`` is ``K*prod(n) x M*prod(D)``: its rows are the
shifted filters, grouped in ``K`` blocks of ``prod(n)`` rows, one block per filter
(Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks*, Sec. 2.2); in compressive-sensing notation ``Phi = W^T``.

Engines
-------
``"gemm"``  patches + one matrix product (im2col); the adjoint is a matrix product followed
            by ``prod(l)`` strided additions (col2im, channels-last).  NumPy or CuPy.
``"fft"``   products of per-frequency ``K x M`` matrices (the operator is block diagonal in
            frequency before striding).  NumPy or CuPy.  Used by ``"auto"`` for stride 1
            when its operation count is lower (many channels, small grids).
``"torch"`` ``torch.nn.functional.conv{1,2}d`` / ``conv_transpose{1,2}d`` on zero-copy
            views of NumPy arrays (CPU).  Requires PyTorch.  ``"auto"`` uses it for float32
            NumPy data above a measured size when PyTorch is installed (imported lazily on
            first use); :func:`modelcs.engine_policy` / :func:`modelcs.set_engine_policy`
            switch that at run time (``"numpy"``: never PyTorch; ``"torch"``: always).
            On few cores, a torch call right after a NumPy BLAS call (or the reverse) can
            run 2-3x slower while the other library's worker threads spin-wait; see
            ``benchmarks/bench_operator.py``.

``"sparse"`` the adjoint only: ``W.T @ z`` as a sum of shifted filters, one per nonzero of
            ``z`` (the forward uses ``"gemm"``).  ``"auto"`` uses it for codes with at most
            one nonzero in 32 entries (IHT iterates, model-sparse samples).

``"auto"`` otherwise picks ``"fft"`` for stride 1 when its operation count is lower and
``"gemm"`` else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._backend import (
    from_torch,
    get_array_module,
    has_module,
    is_torch_tensor,
    to_numpy,
    unravel_index,
)
from .._memory import check_allocation, check_elements
from .._padding import parse_padding as _parse_padding  # the one padding parser
from .._validation import as_int_tuple, check_choice, check_finite, check_positive_int, check_rng
from .base import LinearOperator
from .policy import (
    TORCH_MAX_CHANNELS_F64,
    TORCH_MAX_PIXELS_F64,
    TORCH_MIN_CHANNELS_F32,
    TORCH_MIN_FLOPS,
    TORCH_MIN_FLOPS_1D_F32,
    TORCH_MIN_FLOPS_SINGLE_F32,
    TORCH_MIN_PIXELS_SINGLE_F32,
    get_engine_policy,
)

__all__ = ["ConvOperator"]

_ENGINES = ("auto", "gemm", "fft", "torch", "sparse")
# largest number of multiply-adds (and index entries) the sparse-code adjoint builds at once
_SPARSE_MAX_WORK = 1 << 24


class ConvOperator(LinearOperator):
    """A multichannel, strided 1-D or 2-D convolution ``W`` as a linear operator.

    Parameters
    ----------
    filters : array_like, shape ``(K, M/groups, l)`` or ``(K, M/groups, l1, l2)``
        The filter bank in PyTorch's ``OIL`` / ``OIHW`` layout (NumPy or CuPy; real).
    input_shape : int or tuple of int
        Spatial shape ``D`` / ``(D1, D2)`` of one input, or the full ``(M, *D)``.
    stride : int or tuple of int, default 1
        Stride ``t`` per spatial axis.
    padding : {'valid', 'same', 'circular'} or int or tuple, default 'valid'
        ``'valid'`` (the papers'): ``n = (D - l)//t + 1`` shifts per axis; when ``t`` does not
        divide ``D - l`` the trailing ``(D - l) % t`` samples are not covered by any shifted
        filter (see :attr:`uncovered`).  ``'same'``: zero padding with ``n = ceil(D/t)``
        (PyTorch's rule for stride 1, TensorFlow's for larger strides: the odd sample of
        padding goes after).  ``'circular'``: periodic input, ``h[i] = sum_j w[j] x[(i*t + j)
        mod D]``, ``n = ceil(D/t)``.  An int or per-axis tuple: symmetric zero padding as in
        PyTorch; per-axis ``(before, after)`` pairs give asymmetric padding (ONNX).
    groups : int, default 1
        Grouped convolution as in PyTorch (``groups == M`` is depthwise).
    engine : {'auto', 'gemm', 'fft', 'torch', 'sparse'}, default 'auto'
        Algorithm (see the module docstring).  All engines give the same operator.
    dtype : dtype, optional
        ``float32`` or ``float64``; defaults to the filters' dtype (``float64`` for
        non-floating filters).

    Notes
    -----
    ``W @ x`` takes ``(M, *D)``, ``(B, M, *D)`` or a flat vector of length ``M*prod(D)`` and
    returns ``(K, *n)``, ``(B, K, *n)`` or a flat vector.  ``W.T @ z`` goes back.  The
    matrix rows are the C-order flattening of ``(K, *n)``, columns of ``(M, *D)``.
    The array module (NumPy/CuPy) follows the input; filters are moved to the input's
    device once and cached.  Mixed dtypes follow :func:`numpy.result_type`.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> W = ConvOperator.random(96, 32, 5, 32, rng=0)     # the paper's Fig. 2 setting
    >>> W.shape, W.out_shape
    ((2688, 1024), (96, 28))
    >>> x = np.random.default_rng(1).standard_normal((32, 32))
    >>> z = W @ x
    >>> bool(np.allclose(W.to_dense() @ x.ravel(), z.ravel()))
    True
    >>> (W.T @ z).shape
    (32, 32)
    """

    #: its caches are filled idempotently (a race computes an entry twice)
    threadsafe = True

    def __init__(
        self,
        filters: Any,
        input_shape: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: Any = "valid",
        groups: int = 1,
        engine: str = "auto",
        dtype: Any = None,
    ):
        if is_torch_tensor(filters):  # torch filters: zero-copy view (CPU) / CuPy (CUDA)
            filters = from_torch(filters, "filters")
        if not hasattr(filters, "ndim") or not hasattr(filters, "dtype"):
            filters = np.asarray(filters)
        if filters.ndim not in (3, 4):
            raise ValueError(
                f"parameter 'filters' must have shape (K, M/groups, l) or (K, M/groups, l1, l2); "
                f"got an array with shape {tuple(filters.shape)} (ndim {filters.ndim})"
            )
        if filters.dtype.kind == "c":
            raise TypeError(f"parameter 'filters' must be real; got dtype {filters.dtype}")
        if filters.dtype.kind not in "fiub":
            raise TypeError(f"parameter 'filters' must be numeric; got dtype {filters.dtype}")
        if dtype is None:
            dtype = filters.dtype if filters.dtype.kind == "f" else np.float64
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"parameter 'dtype' must be float32 or float64; got {dtype}")
        if min(filters.shape) < 1:
            raise ValueError(f"parameter 'filters' has an empty axis: shape {filters.shape}")
        check_finite("filters", filters)
        d = filters.ndim - 2
        K, Mg = int(filters.shape[0]), int(filters.shape[1])
        l = tuple(int(s) for s in filters.shape[2:])
        groups = check_positive_int("groups", groups)
        if K % groups:
            raise ValueError(
                f"parameter 'groups'={groups} must divide the number of filters K={K} "
                f"(filters shape {tuple(filters.shape)})"
            )
        M = Mg * groups
        if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
            input_shape = (int(input_shape),)
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (d, d + 1):
            raise ValueError(
                f"parameter 'input_shape' must be the spatial shape ({d} int{'s' * (d > 1)}) or "
                f"(M, *D) with {d + 1} ints for {d}-D filters; got {input_shape!r}"
            )
        if len(input_shape) == d + 1:
            if int(input_shape[0]) != M:
                raise ValueError(
                    f"parameter 'input_shape' has {input_shape[0]} channels; the filters "
                    f"{tuple(filters.shape)} with groups={groups} expect M={M}"
                )
            input_shape = tuple(input_shape[1:])
        D = as_int_tuple("input_shape", tuple(input_shape), d)
        t = as_int_tuple("stride", stride, d)
        mode, pads = _parse_padding(padding, d, D, l, t)
        if mode == "circular":
            for a in range(d):
                if l[a] > D[a]:
                    raise ValueError(
                        f"kernel size {l} is larger than the input {D} along axis {a}; "
                        "circular padding needs l <= D"
                    )
            n = tuple(-(-D[a] // t[a]) for a in range(d))
            Dp = tuple(D[a] + l[a] - 1 for a in range(d))
        else:
            Dp = tuple(D[a] + pads[a][0] + pads[a][1] for a in range(d))
            for a in range(d):
                if l[a] > Dp[a]:
                    raise ValueError(
                        f"kernel size {l} is larger than the padded input {Dp} along axis {a} "
                        f"(input_shape {D}, padding {padding!r}); expected l <= D + padding"
                    )
            n = tuple((Dp[a] - l[a]) // t[a] + 1 for a in range(d))
        self.engine = check_choice("engine", engine, _ENGINES)
        if engine == "torch" and not has_module("torch"):
            raise ImportError("engine='torch' needs PyTorch: pip install 'modelcs[torch]'")

        xp = get_array_module(filters)
        # A private copy: every cached derivative (GEMM matrices, frequency responses, torch
        # tensors) is computed from it, so nothing the caller does to their array later can
        # make the forward and the adjoint disagree.  NumPy's copy is also made read-only.
        self._filters = xp.array(filters, dtype=dtype, copy=True)
        if xp is np:
            self._filters.flags.writeable = False
        self.ndim_spatial = d
        self.groups = groups
        self.kernel_size = l
        self.stride = t
        self.padding = padding
        self._mode = mode
        self._pads = pads
        self._Dp = Dp
        self.input_spatial = D
        self.output_spatial = n
        self.n_channels_in = M
        self._cache: dict[tuple[Any, ...], Any] = {}
        super().__init__((M, *D), (K, *n), dtype)

    # ------------------------------------------------------------- properties
    @property
    def filters(self) -> Any:
        """The filter bank ``(K, M/groups, *l)``: a private copy cast to :attr:`dtype`.

        Read-only for NumPy filters; changing the array passed to the constructor afterwards
        does not change the operator (use :meth:`with_filters` for new filters).
        """
        return self._filters

    @property
    def n_blocks(self) -> int:
        """Number of blocks of rows of ``W`` = number of filters ``K``."""
        return self.out_shape[0]

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Shape ``n`` of one filter's response map (one block of the code ``z``)."""
        return self.output_spatial

    @property
    def uncovered(self) -> tuple[int, ...]:
        """Trailing samples per axis of the (padded) input that no shifted filter touches."""
        if self._mode == "circular":
            return tuple(0 for _ in self.stride)
        geom = zip(self._Dp, self.kernel_size, self.stride, strict=True)
        return tuple((Dp - la) % ta for Dp, la, ta in geom)

    # ---------------------------------------------- boundary geometry (public seam)
    # Read-only views of how the input is extended at its boundary, for code that works
    # on the rows of W without applying W (modelcs.rip: coherence, restricted Grams).
    @property
    def padding_mode(self) -> str:
        """How the input is extended at its boundary: ``'zeros'`` or ``'circular'``.

        ``'valid'``, ``'same'`` and integer paddings are ``'zeros'`` (with widths
        :attr:`padding_widths`); ``'circular'`` wraps the input around.
        """
        return self._mode

    @property
    def padding_widths(self) -> tuple[tuple[int, int], ...]:
        """Zero padding ``(before, after)`` per spatial axis (``(0, 0)`` when circular)."""
        return self._pads

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """Spatial shape of the extended input the filters slide over.

        ``D + before + after`` per axis for zero padding, ``D + l - 1`` for circular
        padding (the first ``l - 1`` samples repeated at the end).
        """
        return self._Dp

    def unpad(self, xpad: Any) -> Any:
        """Map an extended batch ``(B, M, *padded_shape)`` back to inputs ``(B, M, *D)``.

        The adjoint of extending the input: zero padding is cropped, circularly wrapped
        samples are added back onto the samples they repeat.  Rows of ``W`` are
        ``unpad`` of a filter placed at its shift in the extended input.

        Examples
        --------
        >>> import numpy as np
        >>> W = ConvOperator(np.ones((1, 1, 3)), 4, padding="circular")
        >>> W.padding_mode, W.padded_shape
        ('circular', (6,))
        >>> W.unpad(np.arange(6.0).reshape(1, 1, 6))       # samples 4, 5 wrap onto 0, 1
        array([[[4., 6., 2., 3.]]])
        """
        return self._unpad(xpad)
    # ---------------------------------------------- end of boundary geometry seam

    def _params(self) -> dict[str, Any]:
        return dict(
            stride=self.stride, padding=self.padding, groups=self.groups, engine=self.engine
        )

    def with_filters(self, filters: Any) -> ConvOperator:
        """A new operator with the same geometry and other filters of the same shape."""
        if tuple(filters.shape) != tuple(self._filters.shape):
            raise ValueError(
                f"parameter 'filters' has shape {tuple(filters.shape)}; expected "
                f"{tuple(self._filters.shape)}"
            )
        return ConvOperator(filters, self.input_spatial, dtype=self.dtype, **self._params())

    def with_engine(self, engine: str) -> ConvOperator:
        """The same operator computed by another engine."""
        params = self._params()
        params["engine"] = engine
        return ConvOperator(self._filters, self.input_spatial, dtype=self.dtype, **params)

    def astype(self, dtype: Any) -> ConvOperator:
        """The same operator with filters cast to ``dtype`` (float32 or float64).

        ``self`` when ``dtype`` is already :attr:`dtype`; the cast copy is cached
        (:meth:`LinearOperator.astype`).
        """
        return super().astype(dtype)  # type: ignore[return-value]

    def _astype(self, dtype: np.dtype) -> ConvOperator:
        return ConvOperator(self._filters, self.input_spatial, dtype=dtype, **self._params())

    def normalized(self) -> ConvOperator:
        """A copy whose filters have unit Frobenius norm each (unit-norm rows in 'valid')."""
        w = self._filters
        check_elements(f"normalized: a float64 copy of filters {tuple(w.shape)}", math.prod(w.shape), copies=2)  # noqa: E501
        xp = get_array_module(w)
        norms = xp.sqrt((w.astype(np.float64) ** 2).reshape(w.shape[0], -1).sum(axis=1))
        if bool((norms == 0).any()):
            raise ValueError("cannot normalize: some filters are identically zero")
        w = (w / norms.reshape((-1,) + (1,) * (w.ndim - 1))).astype(self.dtype)
        return self.with_filters(w)

    @classmethod
    def random(
        cls,
        out_channels: int,
        in_channels: int,
        kernel_size: int | Sequence[int],
        input_shape: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: Any = "valid",
        groups: int = 1,
        normalized: bool = False,
        rng: Any = None,
        dtype: Any = np.float64,
        engine: str = "auto",
    ) -> ConvOperator:
        """Random Gaussian filters as in Theorem 3.1 of the invertibility paper.

        Entries are i.i.d. ``N(0, 1) / sqrt(M * prod(l))`` (``M`` = input channels per
        group), or unit-norm filters when ``normalized=True``; ``rng`` is ``None``, an int
        or a ``numpy.random.Generator`` (SciPy SPEC 7).

        Examples
        --------
        >>> from modelcs import ConvOperator
        >>> W = ConvOperator.random(8, 3, (3, 3), (12, 12), stride=2, normalized=True, rng=0)
        >>> W.out_shape
        (8, 5, 5)
        """
        K = check_positive_int("out_channels", out_channels)
        M = check_positive_int("in_channels", in_channels)
        groups = check_positive_int("groups", groups)
        if M % groups:
            raise ValueError(
                f"parameter 'groups'={groups} must divide in_channels={M}"
            )
        if isinstance(kernel_size, (int, np.integer)):
            d = len(input_shape) if isinstance(input_shape, (tuple, list)) else 1
            if isinstance(input_shape, (tuple, list)) and len(input_shape) == 3:
                d = 2
        else:
            d = len(kernel_size)
        l = as_int_tuple("kernel_size", kernel_size, d)
        gen = check_rng(rng)
        Mg = M // groups
        check_elements(f"ConvOperator.random: filters (out_channels={K}, in_channels/groups={Mg}, kernel_size={l})", K * Mg * math.prod(l), copies=2)  # noqa: E501
        w = gen.standard_normal((K, Mg, *l)) / math.sqrt(Mg * math.prod(l))
        op = cls(
            w.astype(dtype),
            input_shape,
            stride=stride,
            padding=padding,
            groups=groups,
            engine=engine,
            dtype=dtype,
        )
        return op.normalized() if normalized else op

    @classmethod
    def from_torch(
        cls, module: Any, input_shape: int | Sequence[int], *, engine: str = "auto",
        dtype: Any = None,
    ) -> ConvOperator:
        """The linear part of a ``torch.nn.Conv1d``/``Conv2d`` as a :class:`ConvOperator`.

        Stride, zero padding (int, tuple or ``'valid'``/``'same'``) and groups are taken
        from the module; dilation other than 1 and padding modes other than ``'zeros'``
        are refused with a ``ValueError``, other modules with a ``TypeError``.  The bias is
        not part of the linear operator (add ``module.bias[:, None, ...]`` yourself).
        Filters are copied to NumPy (float32 modules give a float32 operator).

        Parameters
        ----------
        module : torch.nn.Conv1d or torch.nn.Conv2d
        input_shape : int or tuple of int
            Spatial input size ``D`` (or ``(M, *D)``).

        Examples
        --------
        >>> import torch
        >>> conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        >>> W = ConvOperator.from_torch(conv, (16, 16))
        >>> x = torch.randn(2, 3, 16, 16)
        >>> bool(torch.allclose(W @ x, conv(x), atol=1e-5))
        True
        """
        name = type(module).__name__
        if name not in ("Conv1d", "Conv2d") or not hasattr(module, "weight"):
            raise TypeError(
                f"parameter 'module' must be a torch.nn.Conv1d or torch.nn.Conv2d; got {name}"
            )
        if any(int(v) != 1 for v in module.dilation):
            raise ValueError(
                f"parameter 'module' has dilation={tuple(module.dilation)}; ConvOperator "
                "supports dilation 1 only"
            )
        if module.padding_mode != "zeros":
            raise ValueError(
                f"parameter 'module' has padding_mode={module.padding_mode!r}; from_torch "
                "supports 'zeros' only (torch centres a circular kernel, ConvOperator's "
                "'circular' anchors it at index 0)"
            )
        pad = module.padding
        padding: Any = pad if isinstance(pad, str) else tuple(int(p) for p in pad)
        w = np.array(module.weight.detach().cpu().numpy(), copy=True)
        op = cls(w, input_shape, stride=tuple(int(s) for s in module.stride),
                 padding=padding, groups=int(module.groups), engine=engine, dtype=dtype)
        return op

    # ------------------------------------------------------------------ caches
    def _key(self, xp: Any, dtype: Any, what: str) -> tuple[Any, ...]:
        dev = xp.cuda.Device().id if xp.__name__ == "cupy" else None
        return (what, xp.__name__, dev, np.dtype(dtype).str)

    def _w(self, xp: Any, dtype: Any) -> Any:
        key = self._key(xp, dtype, "w")
        w = self._cache.get(key)
        if w is None:
            src = to_numpy(self._filters) if xp is np else self._filters
            w = xp.asarray(src).astype(dtype, copy=False)
            self._cache[key] = w
        return w

    def _wmat(self, xp: Any, dtype: Any) -> Any:
        """Filters as ``(g, Kg, Mg*L)`` for the GEMM engine."""
        key = self._key(xp, dtype, "wmat")
        w = self._cache.get(key)
        if w is None:
            g = self.groups
            K = self.out_shape[0]
            w = xp.ascontiguousarray(self._w(xp, dtype).reshape(g, K // g, -1))
            self._cache[key] = w
        return w

    def _wfreq(self, xp: Any, dtype: Any) -> Any:
        """``conj(rfftn(w, s=Dp))`` as ``(g, F, Kg, Mg)`` for the FFT engine."""
        key = self._key(xp, dtype, "wf")
        wf = self._cache.get(key)
        if wf is None:
            d, g = self.ndim_spatial, self.groups
            K, Mg = self._filters.shape[:2]
            axes = tuple(range(2, 2 + d))
            W = xp.fft.rfftn(self._w(xp, dtype), s=self._Dp, axes=axes)
            W = xp.conj(W).reshape(g, K // g, Mg, -1)
            wf = xp.ascontiguousarray(W.transpose(0, 3, 1, 2))
            self._cache[key] = wf
        return wf

    # ---------------------------------------------------------- engine choice
    def _choose(self, x: Any) -> str:
        """The engine for this call: the forced one, or ``"auto"``'s choice (see policy)."""
        if self.engine != "auto":
            if self.engine == "torch" and get_array_module(x) is not np:
                return "gemm"
            return self.engine
        policy = get_engine_policy()
        xp = get_array_module(x)
        # the choice depends on the call only through these (a solver's loop asks ~2x per
        # iteration with the same ones: ~15 us each at the paper's 1-D size, now a lookup)
        B = int(x.shape[0]) if x.ndim == len(self.in_shape) + 1 else 1
        key = ("engine", policy, xp.__name__, x.dtype.str, B)
        eng = self._cache.get(key)
        if eng is None:
            eng = self._numpy_engine(B)
            if policy != "numpy" and xp is np and has_module("torch"):
                if policy == "torch" or self._torch_preferred(B, x.dtype, eng):
                    eng = "torch"
            self._cache[key] = eng
        return str(eng)

    def _numpy_engine(self, B: int) -> str:
        """GEMM or FFT by operation count (the NumPy/CuPy engines)."""
        if any(s != 1 for s in self.stride):
            return "gemm"
        # operation counts per (batch item, filter, input channel)
        L = math.prod(self.kernel_size)
        N = math.prod(self.output_spatial)
        Dp = self._Dp
        F = math.prod(Dp[:-1]) * (Dp[-1] // 2 + 1)
        direct = 2.0 * L * N
        # complex multiply-add (8 real flops) times the measured overhead of the FFTs and
        # layout changes: with 3.0 the paper's 1-D size (K=96, M=32, D=32) stays on GEMM,
        # which measured 1.4-4x faster there, and 3x3 kernels on many channels go to FFT.
        # The frequency-domain filters (F*K*M complex numbers, ~26x the taps of a 3x3
        # bank in float64) are streamed once per call: below a batch of 8 that memory
        # traffic, not arithmetic, sets the time (measured 5-8x slower than GEMM at B=1
        # on the VGG conv5_2 size), so small batches are charged as if they were 8.
        freq = 8.0 * F * 3.0 * max(B, 8) / max(B, 1)
        return "fft" if freq < direct else "gemm"

    def _torch_preferred(self, B: int, dtype: Any, numpy_engine: str) -> bool:
        """``"auto"``'s rule for sending a NumPy batch of ``B`` items in ``dtype`` to
        PyTorch instead of ``numpy_engine`` (constants and the sweep they come from:
        :mod:`modelcs.operators.policy`)."""
        K, Mg = self._filters.shape[:2]
        if dtype == np.float32:
            # oneDNN's float32 convolution is 2-6x faster than NumPy's BLAS from small
            # layers up, except on few input channels (3-channel images: 1.3-1.8x slower)
            # and on tiny calls, where its per-call overhead loses
            macs = B * K * Mg * math.prod(self.kernel_size) * math.prod(self.output_spatial)
            if (B == 1 and math.prod(self.output_spatial) < TORCH_MIN_PIXELS_SINGLE_F32
                    and macs < TORCH_MIN_FLOPS_SINGLE_F32):
                return False  # one small image: the channels-first GEMM is as fast
            if self.ndim_spatial == 1 and macs < TORCH_MIN_FLOPS_1D_F32:
                return False  # conv1d loses to GEMM below large 1-D problems
            return Mg >= TORCH_MIN_CHANNELS_F32 and macs >= TORCH_MIN_FLOPS
        if dtype == np.float64 and self.ndim_spatial == 2 and B > 1:
            # float64 2-D batches: PyTorch's native kernels win up to moderate channel
            # counts and image sizes (its transposed convolution loses on large images);
            # the NumPy FFT engine where its operation count says so, GEMM on wide layers.
            # A single float64 signal stays on NumPy: the channels-first GEMM ties or beats
            # PyTorch there at every size of the sweep (1.0-1.8x)
            if K * Mg <= 256:  # few channels (e.g. 3-channel images): PyTorch at any size
                return True
            if (K * Mg > TORCH_MAX_CHANNELS_F64
                    or math.prod(self.output_spatial) > TORCH_MAX_PIXELS_F64):
                return False
            return numpy_engine != "fft"
        return False

    # ------------------------------------------------------------ pad / unpad
    def _pad(self, x: Any) -> Any:
        """(B, M, *D) -> (B, M, *Dp): zero padding or circular wrap."""
        xp = get_array_module(x)
        d = self.ndim_spatial
        if self._mode == "circular":
            for a in range(d):
                ax = 2 + a
                la = self.kernel_size[a]
                if la > 1:
                    head = (slice(None),) * ax + (slice(0, la - 1),)
                    x = xp.concatenate([x, x[head]], axis=ax)
            return x
        if all(p == (0, 0) for p in self._pads):
            return x
        out = xp.zeros((*x.shape[:2], *self._Dp), dtype=x.dtype)
        idx = (slice(None), slice(None)) + tuple(
            slice(lo, lo + Da) for (lo, _), Da in zip(self._pads, self.input_spatial, strict=True)
        )
        out[idx] = x
        return out

    def _unpad(self, xpad: Any) -> Any:
        """Adjoint of :meth:`_pad`: (B, M, *Dp) -> (B, M, *D)."""
        d = self.ndim_spatial
        if self._mode == "circular":
            for a in reversed(range(d)):
                ax = 2 + a
                la, Da = self.kernel_size[a], self.input_spatial[a]
                if la > 1:
                    pre = (slice(None),) * ax
                    res = xpad[pre + (slice(0, Da),)].copy()
                    res[pre + (slice(0, la - 1),)] += xpad[pre + (slice(Da, None),)]
                    xpad = res
            return xpad
        if all(p == (0, 0) for p in self._pads):
            return xpad
        idx = (slice(None), slice(None)) + tuple(
            slice(lo, lo + Da) for (lo, _), Da in zip(self._pads, self.input_spatial, strict=True)
        )
        return xpad[idx]

    def _subsample_slices(self) -> tuple[slice, ...]:
        return tuple(
            slice(0, (na - 1) * ta + 1, ta)
            for na, ta in zip(self.output_spatial, self.stride, strict=True)
        )

    # ------------------------------------------------------------ GEMM engine
    # The forward GEMM is written so that its result is already channels-first:
    # ``(Kg, Mg*L) @ (Mg*L, N)`` per signal and group (one batched matmul), so no transpose
    # back is needed.  Measured against one large channels-last GEMM over all (signal,
    # position) rows followed by a transpose: faster at every size tried (paper's 1-D size:
    # 47 -> 42 us per signal at batch 2, 76 -> 31 at 32, 91 -> 34 at 128; 2-D 16x16 with
    # 32 channels ~2x; 64 channels 24x24 1.6-1.8x).  The adjoint keeps the channels-last
    # layout for batches (its col2im adds contiguous runs of channels) and uses the
    # channels-first one for a single signal (paper's 1-D size: 62 -> 55 us).
    def _forward_gemm(self, x: Any) -> Any:
        xp = get_array_module(x)
        xpad = xp.ascontiguousarray(self._pad(x))
        d, g = self.ndim_spatial, self.groups
        n, l, t = self.output_spatial, self.kernel_size, self.stride
        B, M, K = xpad.shape[0], xpad.shape[1], self.out_shape[0]
        Mg = M // g
        s = xpad.strides
        win = xp.lib.stride_tricks.as_strided(
            xpad, shape=(B, g, Mg, *l, *n),
            strides=(s[0], Mg * s[1], s[1], *s[2:], *(s[2 + a] * t[a] for a in range(d))))
        cols = win.reshape(B, g, Mg * math.prod(l), math.prod(n))   # im2col: one copy
        out = xp.matmul(self._wmat(xp, xpad.dtype), cols)            # (B, g, Kg, N)
        return out.reshape(B, K, *n)

    def _wmat_taps_outer(self, xp: Any, dtype: Any) -> Any:
        """Filters as ``(g, Kg, L*Mg)`` with taps outer, channels inner (GEMM adjoint)."""
        key = self._key(xp, dtype, "wmat_t")
        w = self._cache.get(key)
        if w is None:
            g = self.groups
            K, Mg = self._filters.shape[:2]
            L = math.prod(self.kernel_size)
            w = self._w(xp, dtype).reshape(g, K // g, Mg, L).transpose(0, 1, 3, 2)
            w = xp.ascontiguousarray(w).reshape(g, K // g, L * Mg)
            self._cache[key] = w
        return w

    def _tap_slices(self) -> list[tuple[slice, ...]]:
        """Per filter tap, the (strided) window of the padded input it reaches, as an index
        of ``(B, *Dp, ...)`` arrays (cached: the col2im of the GEMM adjoint)."""
        taps = self._cache.get(("taps",))
        if taps is None:
            n, t = self.output_spatial, self.stride
            taps = [(slice(None),) + tuple(
                slice(o, o + (na - 1) * ta + 1, ta) for o, na, ta in zip(offs, n, t, strict=True)
            ) for offs in np.ndindex(*self.kernel_size)]
            self._cache[("taps",)] = taps
        return taps  # type: ignore[no-any-return]

    def _adjoint_gemm(self, z: Any) -> Any:
        xp = get_array_module(z)
        B = z.shape[0]
        if B == 1:
            return self._adjoint_gemm_single(xp, z)
        d, g = self.ndim_spatial, self.groups
        n, l = self.output_spatial, self.kernel_size
        K, M = self.out_shape[0], self.in_shape[0]
        Kg, Mg = K // g, M // g
        N, L = math.prod(n), math.prod(l)
        zt = z.reshape(B, g, Kg, N).transpose(1, 0, 3, 2).reshape(g, B * N, Kg)
        cols = xp.matmul(zt, self._wmat_taps_outer(xp, z.dtype))  # (g, B*N, L*Mg)
        # view as (B, *n, g, L, Mg); col2im into a channels-last buffer so that every
        # strided addition moves contiguous runs of Mg channels
        perm = (1, *range(2, 2 + d), 0, 2 + d, 3 + d)
        cols = cols.reshape(g, B, *n, L, Mg).transpose(perm)
        xcl = xp.zeros((B, *self._Dp, g, Mg), dtype=z.dtype)
        for j, idx in enumerate(self._tap_slices()):
            xcl[idx] += cols[..., j, :]
        xpad = xp.ascontiguousarray(xp.moveaxis(xcl.reshape(B, *self._Dp, M), -1, 1))
        return xp.ascontiguousarray(self._unpad(xpad))

    def _adjoint_gemm_single(self, xp: Any, z: Any) -> Any:
        """:meth:`_adjoint_gemm` of one code array ``(1, K, *n)``, channels first: the
        per-tap blocks ``(L, Mg, N)`` of one GEMM are added into the padded input."""
        g = self.groups
        n, l = self.output_spatial, self.kernel_size
        K, M = self.out_shape[0], self.in_shape[0]
        Kg, Mg = K // g, M // g
        L = math.prod(l)
        zt = xp.ascontiguousarray(z).reshape(g, Kg, math.prod(n))
        wt = self._wmat_taps_outer(xp, z.dtype).transpose(0, 2, 1)   # (g, L*Mg, Kg)
        cols = xp.matmul(wt, zt).reshape(g, L, Mg, *n)
        xpad = xp.zeros((g, Mg, *self._Dp), dtype=z.dtype)
        for j, idx in enumerate(self._tap_slices()):
            # idx indexes (B, *Dp): here the leading axes are (g, Mg)
            xpad[(slice(None),) + idx] += cols[:, j]
        return xp.ascontiguousarray(self._unpad(xpad.reshape(1, M, *self._Dp)))

    # --------------------------------------------------------- sparse codes
    def _sparse_ok(self, z: Any) -> bool:
        """Whether ``W.T @ z`` is cheaper by adding shifted filters (few nonzeros)."""
        xp = get_array_module(z)
        if z.size >= 1 << 16:
            # dense codes are the common case: a strided sample of ~4k entries rejects them
            # without a full pass (both paths are exact; this only chooses the faster one)
            step = z.size // 4096
            sample = z.reshape(-1)[::step]
            if int(xp.count_nonzero(sample)) * 16 > sample.size:
                return False
        nnz = int(xp.count_nonzero(z))
        work = nnz * (self.in_shape[0] // self.groups) * math.prod(self.kernel_size)
        return nnz * 32 <= z.size and work <= _SPARSE_MAX_WORK

    def _adjoint_sparse(self, z: Any) -> Any:
        """``W.T @ z`` as a sum of shifted filters, one per nonzero of ``z`` (one bincount).

        Costs ``nnz * (M/groups) * prod(l)`` multiply-adds instead of a full transposed
        convolution; used by ``"auto"`` for sparse codes (IHT iterates, model-sparse
        samples).  Summation order differs from the other engines (rounding only).
        """
        xp = get_array_module(z)
        B = z.shape[0]
        d, g = self.ndim_spatial, self.groups
        K, M = self.out_shape[0], self.in_shape[0]
        Kg, Mg = K // g, M // g
        Dp, t = self._Dp, self.stride
        nDp = math.prod(Dp)
        sd = [math.prod(Dp[a + 1 :]) for a in range(d)]
        # flat indices of a boolean mask, then unravel: ~10x faster than nonzero() on a
        # float N-d array (13 ms -> 1.3 ms for 1000 codes of 96x28)
        flat_nz = xp.flatnonzero(z.reshape(-1) != 0)
        nz = unravel_index(flat_nz, z.shape)
        base = nz[0] * (M * nDp) + (nz[1] // Kg) * (Mg * nDp)
        for a in range(d):
            base = base + nz[2 + a] * (t[a] * sd[a])
        grid = np.indices((Mg, *self.kernel_size)).reshape(1 + d, -1)
        tap = grid[0] * nDp
        for a in range(d):
            tap = tap + grid[1 + a] * sd[a]
        flat = base[:, None] + xp.asarray(tap)[None, :]
        wts = z.reshape(-1)[flat_nz][:, None] * self._w(xp, z.dtype).reshape(K, -1)[nz[1]]
        out = xp.bincount(flat.ravel(), weights=wts.ravel(), minlength=B * M * nDp)
        xpad = out.reshape(B, M, *Dp).astype(z.dtype, copy=False)
        return xp.ascontiguousarray(self._unpad(xpad))

    # ------------------------------------------------------------- FFT engine
    def _forward_fft(self, x: Any) -> Any:
        xp = get_array_module(x)
        xpad = self._pad(x)
        B, M = xpad.shape[:2]
        d, g = self.ndim_spatial, self.groups
        K = self.out_shape[0]
        Mg = M // g
        axes = tuple(range(2, 2 + d))
        X = xp.fft.rfftn(xpad, axes=axes)
        fshape = X.shape[2:]
        X = X.reshape(B, g, Mg, -1).transpose(1, 3, 2, 0)  # (g, F, Mg, B)
        H = xp.matmul(self._wfreq(xp, x.dtype), X)  # (g, F, Kg, B)
        H = H.transpose(3, 0, 2, 1).reshape(B, K, *fshape)
        h = xp.fft.irfftn(H, s=self._Dp, axes=axes)
        out = h[(slice(None), slice(None)) + self._subsample_slices()]
        return xp.ascontiguousarray(out.astype(x.dtype, copy=False))

    def _adjoint_fft(self, z: Any) -> Any:
        xp = get_array_module(z)
        B = z.shape[0]
        d, g = self.ndim_spatial, self.groups
        K, M = self.out_shape[0], self.in_shape[0]
        Kg = K // g
        axes = tuple(range(2, 2 + d))
        if all(ta == 1 for ta in self.stride) and tuple(self.output_spatial) == self._Dp:
            zu = z
        else:
            zu = xp.zeros((B, K, *self._Dp), dtype=z.dtype)
            zu[(slice(None), slice(None)) + self._subsample_slices()] = z
        Z = xp.fft.rfftn(zu, axes=axes)
        fshape = Z.shape[2:]
        Z = Z.reshape(B, g, Kg, -1).transpose(1, 3, 2, 0)  # (g, F, Kg, B)
        # W^H Z = conj(W^T conj(Z)) with W the cached conj(FFT(w)): no conjugated copy of W
        Xf = xp.conj(xp.matmul(self._wfreq(xp, z.dtype).transpose(0, 1, 3, 2), xp.conj(Z)))
        Xf = Xf.transpose(3, 0, 2, 1).reshape(B, M, *fshape)
        xpad = xp.fft.irfftn(Xf, s=self._Dp, axes=axes).astype(z.dtype, copy=False)
        return xp.ascontiguousarray(self._unpad(xpad))

    # ----------------------------------------------------------- torch engine
    def _torch_w(self, dtype: Any) -> Any:
        key = ("torch", np.dtype(dtype).str)
        w = self._cache.get(key)
        if w is None:
            import torch

            w = torch.from_numpy(np.ascontiguousarray(to_numpy(self._filters).astype(dtype)))
            self._cache[key] = w
        return w

    def _forward_torch(self, x: Any) -> Any:
        import torch
        import torch.nn.functional as F

        xpad = np.ascontiguousarray(self._pad(x))
        conv = F.conv1d if self.ndim_spatial == 1 else F.conv2d
        with torch.no_grad():
            out = conv(
                torch.from_numpy(xpad), self._torch_w(x.dtype), stride=self.stride,
                groups=self.groups,
            )
        return out.numpy()

    def _adjoint_torch(self, z: Any) -> Any:
        import torch
        import torch.nn.functional as F

        convt = F.conv_transpose1d if self.ndim_spatial == 1 else F.conv_transpose2d
        n, l, t = self.output_spatial, self.kernel_size, self.stride
        opad = tuple(
            Dp - ((na - 1) * ta + la) for Dp, na, ta, la in zip(self._Dp, n, t, l, strict=True)
        )
        with torch.no_grad():
            xpad = convt(
                torch.from_numpy(np.ascontiguousarray(z)), self._torch_w(z.dtype), stride=t,
                output_padding=opad, groups=self.groups,
            )
        return np.ascontiguousarray(self._unpad(xpad.numpy()))

    # ------------------------------------------------------------- protocol
    def _forward(self, x: Any) -> Any:
        eng = self._choose(x)
        if eng == "fft":
            return self._forward_fft(x)
        if eng == "sparse":
            return self._forward_gemm(x)
        if eng == "torch":
            return self._forward_torch(x)
        return self._forward_gemm(x)

    def _adjoint(self, z: Any) -> Any:
        if self.engine == "auto" and self._sparse_ok(z):
            return self._adjoint_sparse(z)
        eng = self._choose(z)
        if eng == "fft":
            return self._adjoint_fft(z)
        if eng == "sparse":
            return self._adjoint_sparse(z)
        if eng == "torch":
            return self._adjoint_torch(z)
        return self._adjoint_gemm(z)

    # ------------------------------------------------------------ conversions
    def _sparse_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and filter-entry index of every nonzero of ``W`` (NumPy)."""
        d, g = self.ndim_spatial, self.groups
        K, M = self.out_shape[0], self.in_shape[0]
        Kg, Mg = K // g, M // g
        n, l, t, D = self.output_spatial, self.kernel_size, self.stride, self.input_spatial
        N, L = math.prod(n), math.prod(l)
        k = np.arange(K).reshape(K, 1, 1, 1)
        p = np.arange(N).reshape(1, N, 1, 1)
        mg = np.arange(Mg).reshape(1, 1, Mg, 1)
        j = np.arange(L).reshape(1, 1, 1, L)
        # (_backend.unravel_index: NumPy 2.4's own made rows 8193+ of a 224x224 MobileNet
        # layer wrong when called on indices shaped like ``p``)
        pm = unravel_index(p, n)
        jm = unravel_index(j, l)
        valid = np.ones((1, N, 1, L), dtype=bool)
        flat_pos = np.zeros((1, N, 1, L), dtype=np.int64)
        for a in range(d):
            pos = pm[a] * t[a] + jm[a]
            if self._mode == "circular":
                pos = pos % D[a]
            else:
                pos = pos - self._pads[a][0]
                valid = valid & (pos >= 0) & (pos < D[a])
            flat_pos = flat_pos * D[a] + np.clip(pos, 0, D[a] - 1)
        m = (k // Kg) * Mg + mg
        rows = np.broadcast_to(k * N + p, (K, N, Mg, L))
        cols = np.broadcast_to(m * math.prod(D) + flat_pos, (K, N, Mg, L))
        ent = np.broadcast_to((k * Mg + mg) * L + j, (K, N, Mg, L))
        keep = np.broadcast_to(valid, (K, N, Mg, L))
        return rows[keep], cols[keep], ent[keep]

    def to_sparse(self, format: str = "csr") -> Any:
        """``W`` as a SciPy sparse array built from the filter taps (no dense step).

        Exactly ``to_dense()`` (every padding, stride, group and 1-D/2-D layout): one
        stored entry per filter tap that lands inside the input, ``(M / groups) * prod(l)``
        per row at most.  Always on the host: CuPy filters are copied to NumPy.  The
        memory for the entries is checked before anything is allocated.

        Parameters
        ----------
        format : {'csr', 'csc', 'coo'}, default 'csr'
            The SciPy sparse format (``csr_array``, ``csc_array`` or ``coo_array``).

        Returns
        -------
        scipy.sparse array
            Shape ``W.shape``, the dtype of the filters.

        Examples
        --------
        >>> import numpy as np
        >>> from modelcs import ConvOperator
        >>> W = ConvOperator.random(4, 2, 3, 10, rng=0)
        >>> S = W.to_sparse()
        >>> S.shape, S.nnz, bool(np.array_equal(S.toarray(), W.to_dense()))
        ((32, 20), 192, True)
        """
        import scipy.sparse as sp

        check_choice("format", format, ("csr", "csc", "coo"))
        check_allocation(f"to_sparse: W's {math.prod(self.out_shape)} x {math.prod(self.in_shape)} matrix with up to {math.prod(self.filters.shape) * math.prod(self.output_spatial)} nonzeros (filters {tuple(self.filters.shape)}, {math.prod(self.output_spatial)} shifts)", 64 * math.prod(self.filters.shape) * math.prod(self.output_spatial))  # noqa: E501
        rows, cols, ent = self._sparse_indices()
        vals = to_numpy(self._filters).reshape(-1)[ent]
        if self._mode == "circular" or format == "coo":
            # wrapped taps of a filter longer than the input may share a column: summed
            S = sp.coo_array((vals, (rows, cols)), shape=self.shape)
            if self._mode == "circular":
                S.sum_duplicates()
            return S.asformat(format)
        # zero padding: rows come out sorted and, within a row, columns strictly
        # increasing (channel, then tap in row-major order), so CSR is direct
        indptr = np.zeros(self.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.shape[0]), out=indptr[1:])
        S = sp.csr_array((vals, cols, indptr), shape=self.shape)
        S.has_sorted_indices = True
        return S if format == "csr" else S.asformat(format)
