"""Read CIFAR's pickle batches without letting the file choose what code runs.

A pickle names the callables that rebuild its objects ("GLOBAL posix system" is all an attack needs), so plain
pickle.load on a file under data.path runs whatever the file's author chose. A CIFAR batch holds only a dict of bytes,
ints, lists and one uint8 ndarray: dicts, lists, ints and (Python 2) strings come from pickle opcodes, and the only
globals it names are numpy's ndarray rebuilders. Every other global is refused before it is imported.
"""
from __future__ import annotations

import pickle
from typing import IO, Any

import numpy as np

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias of it
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """What Python 3 writes for bytes at protocol <= 2 (`_codecs.encode(text, 'latin1')`); a copy re-pickled by Python 3
    holds it. Only that exact use is served, so the file cannot pick a codec."""
    if type(obj) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode called with {type(obj).__name__}, {encoding!r}, {errors!r}, not as pickle writes bytes")
    return obj.encode("latin1")


# (module, name) as written in the file -> the object to use. Objects are looked up here, never imported by the
# file's names, so even an allowed name cannot pull in a module. Archives written by numpy 1.x say numpy.core, by 2.x numpy._core.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,  # a numpy int/float scalar, e.g. in a re-saved meta file
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global outside _ALLOWED; `qualname` is what it asked for, e.g. 'posix.system'."""

    def __init__(self, module: str, name: str) -> None:
        self.qualname = f"{module}.{name}"
        super().__init__(f"refused global {self.qualname}")


class CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Every global (GLOBAL, STACK_GLOBAL, and copyreg extension codes) reaches the object through find_class.
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not part of a CIFAR batch")


def load_batch(fh: IO[bytes]) -> Any:
    # The archives were pickled by Python 2; encoding="bytes" keeps their str keys and pixel strings as bytes, as-is.
    return CifarUnpickler(fh, encoding="bytes").load()
