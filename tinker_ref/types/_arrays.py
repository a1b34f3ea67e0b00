"""Small numpy helpers shared by the public types: freezing arrays and exact comparison.

The types hold numpy arrays inside frozen dataclasses. Freezing means the arrays are read-only and
never shared with a caller who could still write to them; comparison is bit-for-bit (so NaN equals
the same NaN and 0.0 differs from -0.0), which is what wire round-trip tests need.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def frozen_array(array: npt.NDArray[Any], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """Return a read-only, C-contiguous, native-order copy of `array` in `dtype`.

    A read-only input that already has the right layout is kept as it is: nobody can write to it
    through this reference (a view of immutable `bytes` from the decoders is the common case), so
    copying it would only cost time.
    """
    if (
        not array.flags.writeable
        and array.dtype == dtype
        and array.dtype.isnative
        and array.flags.c_contiguous
    ):
        return array
    if array.dtype == dtype:  # a plain copy: nothing can overflow (and errstate costs ~20 us)
        copied = np.array(array, order="C", copy=True)
    else:
        with np.errstate(over="ignore"):  # float64 -> float32 narrowing: out of range is inf
            copied = np.array(array, dtype=dtype, order="C", copy=True)
    copied.flags.writeable = False
    return copied


def arrays_identical(left: npt.NDArray[Any] | None, right: npt.NDArray[Any] | None) -> bool:
    """Bit-for-bit equality of two optional arrays, including dtype and shape."""
    if left is None or right is None:
        return left is right
    return (
        left.dtype == right.dtype
        and left.shape == right.shape
        and left.tobytes() == right.tobytes()
    )
