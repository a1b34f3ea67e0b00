"""`TensorData`: the numeric tensor that every loss input and output travels as.

Owns the public dtype rules (only float32 and int64 exist on the public wire), conversion from
lists, numpy and torch (with the official SDK's sparse-CSR-when-smaller rule), validation of shapes
and CSR structure, and densification. It is not a wire format: the protobuf and JSON forms live in
`tinker_ref.codec`. torch is imported only inside `to_torch`, so this module loads without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from tinker_ref.types._arrays import arrays_identical, frozen_array

if TYPE_CHECKING:
    import torch

__all__ = ["TensorData", "TensorDtype"]

TensorDtype: TypeAlias = Literal["float32", "int64"]

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "int64": np.dtype(np.int64),
}
_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True, eq=False, init=False)
class TensorData:
    """A dense or sparse-CSR tensor of float32 or int64 values (mirrors `tinker.TensorData`).

    Dense: `data` holds every element, flattened row-major; `shape` is the shape (`None` means
    1-D). Sparse CSR (2-D only): `data` holds the listed values, `sparse_crow_indices` the
    `nrows + 1` row pointers and `sparse_col_indices` the column of each value; unlisted cells
    take the `pad_value` given when densifying (0 by default). Values are held as one read-only
    numpy array, so construction from numpy and wire encoding never loop over elements in Python.
    Equality is bit-for-bit (dtype, shape, layout and value bits).
    """

    dtype: TensorDtype
    shape: list[int] | None
    _values: npt.NDArray[Any] = field(repr=False)  # (numel,) dense, or (nnz,) CSR; read-only
    _crow_indices: npt.NDArray[np.int64] | None = field(repr=False)  # (nrows + 1,)
    _col_indices: npt.NDArray[np.int64] | None = field(repr=False)  # (nnz,)

    def __init__(
        self,
        data: Sequence[Any] | npt.NDArray[Any] | None = None,
        dtype: TensorDtype | None = None,
        shape: Sequence[int] | None = None,
        sparse_crow_indices: Sequence[int] | npt.NDArray[Any] | None = None,
        sparse_col_indices: Sequence[int] | npt.NDArray[Any] | None = None,
    ) -> None:
        if dtype is None:
            raise TypeError("TensorData requires `dtype` ('float32' or 'int64')")
        if dtype not in NUMPY_DTYPES:
            raise ValueError(f"TensorData dtype must be 'float32' or 'int64', got {dtype!r}")
        array = _as_array(data, "data")
        checked_shape = _check_shape(shape)
        if checked_shape is None and array.ndim > 1:
            # A nested list or an n-D array carries its own shape; keep it rather than
            # silently flattening it to 1-D.
            checked_shape = list(array.shape)
        values = frozen_array(_cast_values(array, dtype), NUMPY_DTYPES[dtype]).reshape(-1)

        if (sparse_crow_indices is None) != (sparse_col_indices is None):
            raise ValueError("sparse_crow_indices and sparse_col_indices must be given together")
        crow: npt.NDArray[np.int64] | None = None
        col: npt.NDArray[np.int64] | None = None
        if sparse_crow_indices is not None and sparse_col_indices is not None:
            crow = _index_array(sparse_crow_indices, "sparse_crow_indices")
            col = _index_array(sparse_col_indices, "sparse_col_indices")
            _check_csr(checked_shape, crow, col, values.size)
        elif checked_shape is not None and math.prod(checked_shape) != values.size:
            raise ValueError(
                f"TensorData shape {checked_shape} needs {math.prod(checked_shape)} elements, "
                f"got {values.size}"
            )

        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "shape", checked_shape)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_crow_indices", crow)
        object.__setattr__(self, "_col_indices", col)

    # ----- views -------------------------------------------------------------------------------

    @property
    def data(self) -> list[Any]:
        """The stored values as a Python list (every element if dense, the listed ones if CSR)."""
        result: list[Any] = self._values.tolist()
        return result

    @property
    def values_array(self) -> npt.NDArray[Any]:
        """The stored values as a read-only flat numpy array (no copy)."""
        return self._values

    @property
    def is_sparse(self) -> bool:
        return self._crow_indices is not None

    @property
    def sparse_crow_indices(self) -> list[int] | None:
        return None if self._crow_indices is None else self._crow_indices.tolist()

    @property
    def sparse_col_indices(self) -> list[int] | None:
        return None if self._col_indices is None else self._col_indices.tolist()

    @property
    def crow_indices_array(self) -> npt.NDArray[np.int64] | None:
        """CSR row pointers as a read-only int64 array, `None` when dense."""
        return self._crow_indices

    @property
    def col_indices_array(self) -> npt.NDArray[np.int64] | None:
        """CSR column indices as a read-only int64 array, `None` when dense."""
        return self._col_indices

    @property
    def dense_shape(self) -> tuple[int, ...]:
        """The shape of the dense tensor; a 1-D tensor without `shape` is `(len(data),)`."""
        return tuple(self.shape) if self.shape is not None else (self._values.size,)

    # ----- construction ------------------------------------------------------------------------

    @classmethod
    def from_numpy(cls, array: npt.NDArray[Any]) -> TensorData:
        """Dense TensorData from an array: floats become float32, signed integers int64.

        bool and unsigned arrays are refused, as the official SDK does (a uint8 mask is almost
        always a mistake for a weights tensor).
        """
        if not isinstance(array, np.ndarray):
            raise TypeError(f"from_numpy expects a numpy array, got {type(array).__name__}")
        return cls(data=array, dtype=_dtype_for_numpy(array.dtype), shape=list(array.shape))

    @classmethod
    def from_torch(cls, tensor: torch.Tensor) -> TensorData:
        """Dense TensorData from a torch tensor (bf16/f16/f64 widen or narrow to float32)."""
        return cls.from_numpy(_torch_to_numpy(tensor))

    @classmethod
    def from_torch_sparse(cls, tensor: torch.Tensor, pad_value: int = 0) -> TensorData:
        """Sparse CSR TensorData from a dense 2-D tensor, when CSR is smaller.

        Same rule as the official SDK: cells equal to `pad_value` are left out, and CSR is used
        only if `(nrows + 1) + 2 * nnz < nrows * ncols`; otherwise (or for non-2-D input) the
        result is dense.
        """
        return cls.from_numpy_sparse(_torch_to_numpy(tensor), pad_value)

    @classmethod
    def from_numpy_sparse(cls, array: npt.NDArray[Any], pad_value: int = 0) -> TensorData:
        """`from_torch_sparse` for a numpy array."""
        pad = _check_pad_value(pad_value)
        if array.ndim != 2:
            return cls.from_numpy(array)
        dtype = _dtype_for_numpy(array.dtype)
        # Decide on the values as they will be stored (e.g. a float64 1e-50 is 0.0 in float32).
        array = array.astype(NUMPY_DTYPES[dtype], copy=False)
        listed = array != pad  # (nrows, ncols) bool; NaN counts as listed
        nnz = int(np.count_nonzero(listed))
        nrows, ncols = array.shape
        if (nrows + 1) + 2 * nnz >= nrows * ncols:
            return cls.from_numpy(array)
        crow = np.zeros(nrows + 1, dtype=np.int64)
        np.cumsum(listed.sum(axis=1), out=crow[1:])
        return cls(
            data=array[listed],
            dtype=dtype,
            shape=[nrows, ncols],
            sparse_crow_indices=crow,
            sparse_col_indices=np.nonzero(listed)[1].astype(np.int64),
        )

    # ----- conversion --------------------------------------------------------------------------

    def to_numpy(self, pad_value: int = 0) -> npt.NDArray[Any]:
        """A fresh, writable dense array; CSR cells that are not listed get `pad_value`."""
        if self._crow_indices is None or self._col_indices is None:
            return self._values.reshape(self.dense_shape).copy()
        pad = _check_pad_value(pad_value)
        nrows, ncols = self.dense_shape
        dense = np.full((nrows, ncols), pad, dtype=self._values.dtype)
        rows = np.repeat(np.arange(nrows), np.diff(self._crow_indices))
        # Bit-identical to the SDK's torch path, which densifies `values - pad` onto zeros and
        # adds `pad` back: so a listed -0.0 comes out +0.0, and with a non-zero pad float32
        # values go through the same two roundings.
        with np.errstate(invalid="ignore", over="ignore"):  # signalling NaNs, huge values
            dense[rows, self._col_indices] = ((self._values - pad) + 0) + pad
        return dense

    def to_torch(self, pad_value: int = 0) -> torch.Tensor:
        """A fresh dense torch tensor (torch is imported here, not at module load)."""
        import torch

        return torch.from_numpy(self.to_numpy(pad_value))

    def tolist(self, pad_value: int = 0) -> list[Any]:
        """The dense tensor as nested Python lists."""
        result: list[Any] = self.to_numpy(pad_value).tolist()
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorData):
            return NotImplemented
        return (
            self.dtype == other.dtype
            and self.shape == other.shape
            and arrays_identical(self._values, other._values)
            and arrays_identical(self._crow_indices, other._crow_indices)
            and arrays_identical(self._col_indices, other._col_indices)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value type, like the SDK's


# ----- helpers -----------------------------------------------------------------------------------


def _as_array(data: object, what: str) -> npt.NDArray[Any]:
    if data is None:
        return np.empty(0, dtype=np.float64)
    if isinstance(data, np.ndarray):
        return data
    if type(data).__module__.startswith("torch"):
        raise TypeError(f"{what}: pass torch tensors through TensorData.from_torch")
    try:
        return np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{what} must be a rectangular list of numbers ({exc})") from exc


def _cast_values(array: npt.NDArray[Any], dtype: TensorDtype) -> npt.NDArray[Any]:
    """Check that `array` converts to `dtype` without losing meaning (no bool, no float->int)."""
    kind = array.dtype.kind
    if array.size == 0 and kind in "fiub":
        return array  # `[]` parses as float64; an empty tensor of either dtype is fine
    if dtype == "float32":
        if kind not in "fiu":
            raise ValueError(f"float32 TensorData needs numeric data, got a {array.dtype} array")
        return array
    if kind not in "iu":
        raise ValueError(f"int64 TensorData needs integer data, got a {array.dtype} array")
    if kind == "u" and int(array.max()) > _INT64_MAX:
        raise ValueError(f"int64 TensorData value {int(array.max())} exceeds the int64 range")
    return array


def _check_shape(shape: Sequence[int] | None) -> list[int] | None:
    if shape is None:
        return None
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise TypeError(f"shape must be a list of integers, got {shape!r}")
    dims: list[int] = []
    for dim in shape:
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"shape must be a list of integers, got {list(shape)!r}")
        if dim < 0:
            raise ValueError(f"shape entries must be >= 0, got {list(shape)}")
        dims.append(int(dim))
    return dims


def _index_array(indices: Sequence[int] | npt.NDArray[Any], what: str) -> npt.NDArray[np.int64]:
    array = _as_array(indices, what)
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {list(array.shape)}")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integers, got a {array.dtype} array")
    if array.size and array.dtype.kind == "u" and int(array.max()) > _INT64_MAX:
        raise ValueError(f"{what} value {int(array.max())} exceeds the int64 range")
    return frozen_array(array, np.dtype(np.int64))


def _check_csr(
    shape: list[int] | None,
    crow: npt.NDArray[np.int64],
    col: npt.NDArray[np.int64],
    nnz: int,
) -> None:
    """Validate CSR structure with torch's invariants (sorted, unique columns per row)."""
    if shape is None or len(shape) != 2:
        raise ValueError(f"a sparse CSR TensorData needs a 2-D shape, got {shape}")
    nrows, ncols = shape
    if crow.size != nrows + 1:
        raise ValueError(
            f"sparse_crow_indices needs nrows + 1 = {nrows + 1} entries for shape {shape}, "
            f"got {crow.size}"
        )
    if crow[0] != 0:
        raise ValueError(f"sparse_crow_indices must start at 0, got {int(crow[0])}")
    steps = np.diff(crow)
    if np.any(steps < 0):
        bad = int(np.argmax(steps < 0))
        raise ValueError(
            f"sparse_crow_indices must be non-decreasing, got {int(crow[bad])} then "
            f"{int(crow[bad + 1])} at rows {bad}..{bad + 1}"
        )
    if crow[-1] != nnz:
        raise ValueError(f"sparse_crow_indices ends at {int(crow[-1])} but data has {nnz} values")
    if col.size != nnz:
        raise ValueError(f"sparse_col_indices has {col.size} entries but data has {nnz} values")
    if nnz == 0:
        return
    if int(col.min()) < 0 or int(col.max()) >= ncols:
        raise ValueError(
            f"sparse_col_indices must lie in [0, {ncols}) for shape {shape}, "
            f"got values in [{int(col.min())}, {int(col.max())}]"
        )
    rows = np.repeat(np.arange(nrows), steps)  # row of each listed value, (nnz,)
    same_row = rows[1:] == rows[:-1]
    if np.any(col[1:][same_row] <= col[:-1][same_row]):
        row = int(rows[1:][same_row][np.argmax(col[1:][same_row] <= col[:-1][same_row])])
        raise ValueError(
            f"sparse_col_indices must be strictly increasing within a row; row {row} is not"
        )


def _dtype_for_numpy(dtype: np.dtype[Any]) -> TensorDtype:
    if dtype.kind == "f":
        return "float32"
    if dtype.kind == "i":
        return "int64"
    raise ValueError(
        f"unsupported numpy dtype {dtype}: expected a floating-point or signed-integer array "
        "(bool and unsigned arrays are refused)"
    )


def _torch_to_numpy(tensor: torch.Tensor) -> npt.NDArray[Any]:
    """Dense numpy copy of a torch tensor; works without importing torch here."""
    if not hasattr(tensor, "detach"):
        raise TypeError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    dtype = tensor.dtype
    detached = tensor.detach().cpu()
    if dtype.is_complex:
        raise ValueError(f"unsupported torch dtype {dtype}: complex tensors have no wire form")
    if dtype.is_floating_point:
        # bf16 has no numpy equivalent; f16/f64 narrow or widen to float32 like the SDK.
        return detached.float().contiguous().numpy()
    if not dtype.is_signed:
        raise ValueError(
            f"unsupported torch dtype {dtype}: expected a floating-point or signed-integer "
            "tensor (bool and unsigned tensors are refused)"
        )
    return detached.long().contiguous().numpy()


def _check_pad_value(pad_value: object) -> int:
    if isinstance(pad_value, (bool, np.bool_)) or not isinstance(pad_value, (int, np.integer)):
        raise TypeError(
            f"pad_value must be an integer, got {type(pad_value).__name__}: {pad_value!r}"
        )
    return int(pad_value)
