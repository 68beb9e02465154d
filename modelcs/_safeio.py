"""Reading and writing files that nobody vouches for.

Every file is hostile until checked.  Readers here open only regular files (a FIFO, a
device, a directory or a socket is refused *before* anything blocks or reads), follow a
symbolic link only when it stays inside the folder that holds it, check every size a
header declares against a byte budget before allocating, cap what a compressed member
may expand to, and raise one exception type, :class:`UnsafeFileError`, whose message
names the file and the reason.

(Writing outputs safely -- never through a symbolic link, never over an existing file
without ``--force`` -- is :func:`modelcs._cli.staged_output`.)
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from ._memory import format_bytes

__all__ = [
    "EXPANSION_RATIO",
    "UnsafeFileError",
    "check_expansion",
    "check_inside",
    "open_regular",
    "open_zip",
    "read_exact",
    "read_npy",
    "read_npz",
    "verify_zip_crc",
]

#: A compressed member (zip, HDF5 chunk or fill value) may not declare more than this many
#: bytes per stored byte once it is larger than :data:`_EXPANSION_FLOOR`.  Trained weights
#: compress by less than 2x; zip bombs by 1000x.
EXPANSION_RATIO = 100
_EXPANSION_FLOOR = 1 << 20
_CHUNK = 1 << 22


class UnsafeFileError(ValueError):
    """A file was refused: not a regular file, outside its folder, larger than the memory
    budget, inconsistent with its own header, or corrupt.

    The message names the file and the reason; ``path`` and ``reason`` hold them.

    Parameters
    ----------
    path : str or os.PathLike
        The file that was refused.
    reason : str
        Why, in words (shown after the path in the message).

    Examples
    --------
    >>> from modelcs import UnsafeFileError
    >>> err = UnsafeFileError("/tmp/m.npz", "it is a directory, not a regular file")
    >>> str(err)
    "refusing to load '/tmp/m.npz': it is a directory, not a regular file"
    >>> isinstance(err, ValueError)
    True
    """

    def __init__(self, path: Any, reason: str) -> None:
        self.path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
        self.reason = reason
        super().__init__(f"refusing to load {self.path!r}: {reason}")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_inside(path: str, folder: str, *, shown: str | None = None) -> str:
    """The real path of ``path``; raise unless it lies inside the real path of ``folder``."""
    real = os.path.realpath(path)
    root = os.path.realpath(folder)
    try:
        inside = os.path.commonpath([real, root]) == root
    except ValueError:  # different drives
        inside = False
    if not inside:
        raise UnsafeFileError(
            shown or path, f"it resolves to {real!r}, outside the folder {root!r}"
        )
    return real


def open_regular(path: Any, *, max_bytes: int | None = None, what: str = "file") -> IO[bytes]:
    """Open ``path`` for binary reading if it is a non-empty regular file.

    A symbolic link is followed only when its target lies inside the link's own folder
    (pass the resolved path, ``os.path.realpath``, to read a target you trust elsewhere).
    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open
    descriptor, so a FIFO or device swapped in after the first check is refused too and
    never blocks.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    UnsafeFileError
        A directory, FIFO, device or socket; a link leaving its folder; an empty file; a
        file larger than ``max_bytes``.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such {what} {p!r}") from None
    except OSError as exc:
        raise UnsafeFileError(p, f"cannot stat it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        target = f" (a link to {os.path.realpath(p)!r})" if os.path.islink(p) else ""
        raise UnsafeFileError(p, f"it is {_kind(st.st_mode)}{target}, not a regular file")
    if os.path.islink(p):
        check_inside(p, os.path.dirname(os.path.abspath(p)), shown=p)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise UnsafeFileError(p, f"cannot open it: {exc.strerror or exc}") from None
    try:
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            raise UnsafeFileError(p, "it changed while being opened (no longer the checked file)")
        if st2.st_size == 0:
            raise UnsafeFileError(p, "it is empty (0 bytes)")
        if max_bytes is not None and st2.st_size > max_bytes:
            raise UnsafeFileError(
                p, f"it is {format_bytes(st2.st_size)}, more than the memory budget "
                f"max_bytes={max_bytes} ({format_bytes(max_bytes)})"
            )
        try:  # back to blocking reads (a regular file never blocks anyway)
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except (ImportError, OSError, AttributeError):  # pragma: no cover - not POSIX
            pass
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_expansion(path: Any, what: str, declared: int, stored: int) -> None:
    """Refuse ``declared`` bytes made from ``stored`` bytes when the ratio is bomb-like."""
    if declared > _EXPANSION_FLOOR and declared > EXPANSION_RATIO * max(stored, 1):
        raise UnsafeFileError(
            path, f"{what} expands {format_bytes(stored)} into {format_bytes(declared)} "
            f"(more than {EXPANSION_RATIO}x: a compression bomb or a fill value standing in "
            "for data that is not in the file)"
        )


def read_exact(fh: IO[bytes], out: np.ndarray, *, path: Any, what: str) -> None:
    """Fill ``out`` from ``fh`` chunk by chunk; refuse a short read."""
    view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    pos, n = 0, view.nbytes
    while pos < n:
        chunk = fh.read(min(_CHUNK, n - pos))
        if not chunk:
            raise UnsafeFileError(path, f"{what} is truncated ({pos} of {n} bytes present)")
        view[pos : pos + len(chunk)] = chunk
        pos += len(chunk)


def _npy_header(fh: IO[bytes], path: Any, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError, RecursionError, OverflowError) as exc:
        raise UnsafeFileError(path, f"{what} has no valid .npy header ({exc})") from None
    if dtype.hasobject:
        raise UnsafeFileError(
            path, f"{what} holds pickled objects (an object array), which are never unpickled"
        )
    if any(int(s) < 0 for s in shape):
        raise UnsafeFileError(path, f"{what} declares a negative shape {shape}")
    return tuple(int(s) for s in shape), bool(fortran), dtype


def _npy_body(fh: IO[bytes], path: Any, what: str, header: Any, available: int,
              budget: int) -> np.ndarray:
    shape, fortran, dtype = header
    n = math.prod(shape) * dtype.itemsize
    if n > budget:
        raise UnsafeFileError(
            path, f"{what} declares shape {shape} {dtype} ({format_bytes(n)}), more than the "
            f"memory budget max_bytes={budget} ({format_bytes(budget)})"
        )
    if n != available:
        raise UnsafeFileError(
            path, f"{what} declares shape {shape} {dtype} ({n} bytes) but holds {available} "
            "bytes of data (truncated or inconsistent header)"
        )
    out = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    if n:
        flat = out.T if fortran else out
        read_exact(fh, flat, path=path, what=what)
    return out


def read_npy(path: Any, *, max_bytes: int) -> np.ndarray:
    """One ``.npy`` file, header checked against the file size and ``max_bytes``."""
    with open_regular(path, max_bytes=max_bytes + (1 << 20)) as fh:
        size = os.fstat(fh.fileno()).st_size
        header = _npy_header(fh, path, "the array")
        return _npy_body(fh, path, "the array", header, size - fh.tell(), max_bytes)


def _zip_members(path: Any, zf: zipfile.ZipFile, max_bytes: int) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise UnsafeFileError(path, "the zip archive lists a member name twice")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise UnsafeFileError(path, f"zip member {info.filename!r} is encrypted")
        check_expansion(path, f"zip member {info.filename!r}", info.file_size,
                        info.compress_size)
        total += info.file_size
    if total > max_bytes:
        raise UnsafeFileError(
            path, f"its members declare {format_bytes(total)} uncompressed, more than the "
            f"memory budget max_bytes={max_bytes} ({format_bytes(max_bytes)})"
        )
    return infos


def open_zip(path: Any, fh: IO[bytes], max_bytes: int, what: str) -> zipfile.ZipFile:
    """A ``ZipFile`` on an open file whose members passed the bomb and budget checks."""
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise UnsafeFileError(path, f"it is not a readable {what} (not a zip archive: {exc})") \
            from None
    _zip_members(path, zf, max_bytes)
    return zf


def verify_zip_crc(path: Any, zf: zipfile.ZipFile) -> None:
    """Read every member once, so zipfile checks its CRC-32 (bounded by the budget check)."""
    for info in zf.infolist():
        try:
            with zf.open(info) as m:
                while m.read(_CHUNK):
                    pass
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise UnsafeFileError(
                path, f"zip member {info.filename!r} is corrupt ({exc})"
            ) from None


def _iter_npz(path: Any, zf: zipfile.ZipFile, budget: int) -> Iterator[tuple[str, np.ndarray]]:
    for info in zf.infolist():
        if not info.filename.endswith(".npy") or info.is_dir():
            continue
        key = info.filename[:-4]
        what = f"member {key!r}"
        try:
            with zf.open(info) as m:
                header = _npy_header(m, path, what)
                arr = _npy_body(m, path, what, header, info.file_size - m.tell(), budget)
                if m.read(1):  # pragma: no cover - sizes were checked above
                    raise UnsafeFileError(path, f"{what} has trailing bytes")
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise UnsafeFileError(path, f"{what} is corrupt ({exc})") from None
        budget -= arr.nbytes
        yield key, arr


def read_npz(path: Any, *, max_bytes: int) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz``: zip checks (bomb, budget, CRC), headers checked, no pickles."""
    with open_regular(path) as fh:
        zf = open_zip(path, fh, max_bytes, ".npz archive")
        with zf:
            return dict(_iter_npz(path, zf, max_bytes))
