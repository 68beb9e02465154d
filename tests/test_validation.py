"""Shared argument checks."""

import warnings

import numpy as np
import pytest

from modelcs._validation import as_int_tuple, check_finite, check_rng


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_finite_rejects_and_counts(bad, dtype):
    a = np.ones((3, 4), dtype=dtype)
    a[1, 2] = bad
    a[2, 0] = bad
    with pytest.raises(ValueError, match=r"parameter 'v' contains 2 non-finite value\(s\)"):
        check_finite("v", a)


def test_check_finite_inf_and_minus_inf_cancel_to_nan():
    a = np.array([np.inf, -np.inf, 1.0])
    with pytest.raises(ValueError, match="contains 2 non-finite"):
        check_finite("v", a)


def test_check_finite_accepts_large_finite_values_whose_sum_overflows():
    a = np.full(10, 3e38, dtype=np.float32)  # sum overflows float32, entries are finite
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_finite("v", a)
    check_finite("i", np.array([1, 2, 3]))  # integers are always finite


def test_as_int_tuple_and_rng_errors():
    assert as_int_tuple("stride", 2, 2) == (2, 2)
    with pytest.raises(TypeError, match="parameter 'stride'"):
        as_int_tuple("stride", (1, 2), 3)
    with pytest.raises(ValueError, match="entries >= 1"):
        as_int_tuple("stride", (1, 0), 2)
    with pytest.raises(TypeError, match="parameter 'rng'"):
        check_rng("abc")
    g = np.random.default_rng(1)
    assert check_rng(g) is g


def test_as_real_array_names_the_parameter():
    from modelcs._validation import as_real_array

    a = as_real_array("h", [[1, 2], [3, 4]])
    assert isinstance(a, np.ndarray) and a.shape == (2, 2)
    x = np.ones(3, dtype=np.float32)
    assert as_real_array("x", x) is x  # arrays are kept as given
    with pytest.raises(TypeError, match="'h' must be a real numeric array; got dtype complex"):
        as_real_array("h", np.ones(2, dtype=complex))
    with pytest.raises(ValueError, match="'c' contains 1 non-finite"):
        as_real_array("c", np.array([1.0, np.nan]))
