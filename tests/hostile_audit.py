"""A corpus of hostile weight files and hostile API calls, and the audit that runs them.

Used by ``tests/test_hostile_files.py`` (one fixture builds the corpus; one child process
loads every file and reports per-file time and peak memory) and runnable on its own to
print the closing-note tables::

    python tests/hostile_audit.py            # builds the corpus in a temp dir, prints tables

Layout of the corpus: ``root/models/`` holds the files handed to ``conv_layers``;
``root/outside/`` holds what hostile files point at (a secret file, a FIFO, an HDF5 file).
The child process installs an audit hook that records every Python-level ``open`` of a
path under ``outside/``; C-level readers (HDF5) would block on the FIFO there, which the
per-file time limit catches.  Nothing is committed as a binary: every file is generated.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MB = 1 << 20
TIME_LIMIT = 2.0  # seconds per file (must show 1)
MEM_LIMIT = 200 * MB  # extra peak memory per file (must show 1)


@dataclass
class Case:
    category: str
    name: str  # file name under models/ (or a call label)
    kwargs: dict[str, Any] = field(default_factory=dict)
    expect: str = "refuse"  # "refuse", "load" (a valid control), "undetectable"


class _Evil:
    """Unpickling this would create ``target`` (it never must)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> Any:
        return (open, (self.target, "w"))


# ------------------------------------------------------------------ file builders
def _npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    return buf.getvalue()


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _npz_member(name: str, payload: bytes, deflate: bool = False) -> bytes:
    buf = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", mode) as zf:
        zf.writestr(name, payload)
    return buf.getvalue()


def _deflate_zeros(prefix: bytes, n_mib: int) -> tuple[bytes, int, int]:
    """Raw deflate of ``prefix`` + ``n_mib`` MiB of zeros, built from one compressed MiB
    repeated (a full flush makes blocks independent): ``(data, crc32, size)``."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    zero = bytes(MB)
    block = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(n_mib):
        crc = zlib.crc32(zero, crc)
    return head + block * n_mib + tail, crc, len(prefix) + n_mib * MB


def _zip_raw(entries: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip archive from ``(name, stored bytes, crc32, uncompressed size, method)``."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, crc, size, method in entries:
        offset = out.tell()
        nm = name.encode()
        fields = (20, 0, method, 0, 0x21, crc, len(data), size, len(nm), 0)
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + nm + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0,
                                  offset) + nm)
    cd = central.getvalue()
    n = len(entries)
    return out.getvalue() + cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(cd),
                                             out.tell(), 0)


def _zip_bomb(member: str, header: bytes, n_zero: int) -> bytes:
    data, crc, size = _deflate_zeros(header, n_zero // MB)
    return _zip_raw([(member, data, crc, size, zipfile.ZIP_DEFLATED)])


def _flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0xFF
    return bytes(b)


def _safetensors(header: Any, data: bytes, raw_header: bytes | None = None) -> bytes:
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _legacy_torch(numel: int, data: bytes) -> bytes:
    """A pre-1.6 (non-zip) torch file whose one FloatStorage declares ``numel`` elements."""
    import torch

    class P(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if obj is _STORAGE:
                return ("storage", torch.FloatStorage, "0", "cpu", numel, None)
            return None

    _STORAGE = object()
    buf = io.BytesIO()
    for v in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001,
                                             "little_endian": True, "type_sizes": {}}):
        pickle.dump(v, buf, protocol=2)
    P(buf, protocol=2).dump({"conv.weight": _STORAGE})
    pickle.dump(["0"], buf, protocol=2)
    buf.write(struct.pack("<q", numel))
    buf.write(data)
    return buf.getvalue()


def _rezip(src: bytes, replace: dict[str, tuple[bytes, int, int, int]]) -> bytes:
    """``src`` (a zip) with members replaced by ``(stored bytes, crc, size, method)``."""
    entries = []
    with zipfile.ZipFile(io.BytesIO(src)) as zi:
        for info in zi.infolist():
            key = info.filename.split("/", 1)[1]
            if key in replace:
                entries.append((info.filename, *replace[key]))
            else:
                data = zi.read(info)
                entries.append((info.filename, data, zlib.crc32(data), len(data),
                                zipfile.ZIP_STORED))
    return _zip_raw(entries)


def _stored(data: bytes) -> tuple[bytes, int, int, int]:
    return data, zlib.crc32(data), len(data), zipfile.ZIP_STORED


def _keras_h5(path: str, *, fletcher32: bool = False) -> None:
    import h5py

    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Conv2D", "config": {"name": "conv", "strides": [1, 1],
                                             "padding": "valid", "dilation_rate": [1, 1]}}]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        g = f.create_group("model_weights/conv")
        g.attrs["weight_names"] = [b"conv/kernel:0"]
        kw: dict[str, Any] = {"fletcher32": True, "chunks": (3, 3, 2, 4)} if fletcher32 else {}
        g.create_dataset("conv/kernel:0", data=np.full((3, 3, 2, 4), 0.5, np.float32), **kw)


def _onnx_model(tensor: Any) -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Conv", ["x", tensor.name], ["y"], name="c")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, None)],
                          [helper.make_tensor_value_info("y", 1, None)], [tensor])
    del TensorProto
    return helper.make_model(g).SerializeToString()


def _onnx_external(name: str, location: str, length: int = 96) -> Any:
    from onnx import TensorProto

    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend([4, 2, 3, 1])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def build_corpus(root: str) -> list[Case]:
    """Write the hostile corpus under ``root`` and return the cases to run."""
    import h5py
    import torch
    from onnx import TensorProto, numpy_helper

    models = os.path.join(root, "models")
    outside = os.path.join(root, "outside")
    os.makedirs(models)
    os.makedirs(outside)
    secret = os.path.join(outside, "secret.bin")
    with open(secret, "wb") as fh:
        fh.write(np.full(4096, 7, np.float32).tobytes())
    os.mkfifo(os.path.join(outside, "fifo.bin"))
    with h5py.File(os.path.join(outside, "other.h5"), "w") as f:
        f["x"] = np.ones((4, 3, 3, 2), np.float32)
    pwned = os.path.join(outside, "pwned.txt")

    cases: list[Case] = []

    def put(category: str, name: str, data: bytes | None = None, expect: str = "refuse",
            **kwargs: Any) -> str:
        p = os.path.join(models, name)
        if data is not None:
            with open(p, "wb") as fh:
                fh.write(data)
        cases.append(Case(category, name, kwargs, expect))
        return p

    w = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    good_npz = _npz_bytes({"c.weight": w})
    tbuf = io.BytesIO()
    torch.save({"c.weight": torch.from_numpy(w)}, tbuf)
    good_pt = tbuf.getvalue()
    good_st = _safetensors({"c.weight": {"dtype": "F32", "shape": [4, 2, 3, 3],
                                         "data_offsets": [0, w.nbytes]}}, w.tobytes())
    good_onnx = _onnx_model(numpy_helper.from_array(w, "w"))

    # -- valid controls (must load: the harness can tell success from refusal)
    put("valid controls", "good.npz", good_npz, expect="load")
    put("valid controls", "good.pt", good_pt, expect="load")
    put("valid controls", "good.safetensors", good_st, expect="load")
    put("valid controls", "good.onnx", good_onnx, expect="load")
    _keras_h5(put("valid controls", "good.h5", expect="load"), fletcher32=True)
    with open(os.path.join(models, "weights.bin"), "wb") as fh:
        fh.write(w.tobytes())
    put("valid controls", "ext_inside.onnx",
        _onnx_model(_onnx_external("w", "weights.bin")), expect="load", external_data=True)
    # 64 MiB of real weights: proves the memory measurement sees what a load allocates
    put("valid controls", "big_64mb.npz", _npz_bytes(
        {"c.weight": np.ones((1024, 16, 32, 32), np.float32)}), expect="load")

    # -- malicious pickles
    evil = {"c.weight": _Evil(pwned)}
    legacy = pickle.dumps(evil, protocol=2)
    put("malicious pickles", "evil_raw.pt", legacy)
    put("malicious pickles", "evil_raw.ckpt", legacy)
    zbuf = io.BytesIO()
    torch.save(evil, zbuf)
    put("malicious pickles", "evil_zip.pth", zbuf.getvalue())
    put("malicious pickles", "evil_zip.bin", zbuf.getvalue())
    obj = np.empty(1, dtype=object)
    obj[0] = _Evil(pwned)
    put("malicious pickles", "evil.npz", _npz_bytes({"c.weight": w, "x": obj}))

    # -- object arrays (no code, still pickles)
    plain = np.array([1, "a", None], dtype=object)
    put("object arrays", "object.npz", _npz_bytes({"c.weight": plain}))
    put("object arrays", "object_struct.npz", _npz_bytes(
        {"c.weight": np.zeros(2, dtype=[("a", "f4"), ("b", object)])}))

    # -- zip bombs: 256 MB of zeros in ~250 KB
    put("zip bombs", "bomb.npz", _zip_bomb("c.weight.npy", _npy_header((64, 1024, 1024)),
                                           256 * MB))
    put("zip bombs", "bomb_lying_header.npz", _zip_bomb(
        "c.weight.npy", _npy_header((4, 2, 3, 3)), 256 * MB))
    put("zip bombs", "bomb.pth", _rezip(good_pt, {"data/0": (
        *_deflate_zeros(b"", 256)[:3], zipfile.ZIP_DEFLATED)}))

    # -- HDF5 reaching outside the file, or expanding
    with h5py.File(put("hdf5 outside/expanding", "external_storage.h5"), "w") as f:
        f.create_dataset("model_weights/conv/kernel", shape=(4096,), dtype="f4",
                         external=[(secret, 0, 4096 * 4)])
    with h5py.File(put("hdf5 outside/expanding", "external_fifo.h5"), "w") as f:
        f.create_dataset("k", shape=(16,), dtype="f4",
                         external=[(os.path.join(outside, "fifo.bin"), 0, 64)])
    with h5py.File(put("hdf5 outside/expanding", "external_link.h5"), "w") as f:
        f["model_weights"] = h5py.ExternalLink(os.path.join(outside, "other.h5"), "/x")
    with h5py.File(put("hdf5 outside/expanding", "virtual.h5"), "w") as f:
        layout = h5py.VirtualLayout(shape=(4, 3, 3, 2), dtype="f4")
        layout[...] = h5py.VirtualSource(os.path.join(outside, "other.h5"), "x",
                                         shape=(4, 3, 3, 2))
        f.create_virtual_dataset("v", layout)
    with h5py.File(put("hdf5 outside/expanding", "dangling_soft_link.h5"), "w") as f:
        f["k"] = h5py.SoftLink("/nowhere/at/all")
    with h5py.File(put("hdf5 outside/expanding", "fill_value_huge.h5"), "w") as f:
        f.create_dataset("k", shape=(100_000, 100_000), dtype="f4", chunks=(64, 64),
                         fillvalue=1.0)
    with h5py.File(put("hdf5 outside/expanding", "fill_value_512mb.h5"), "w") as f:
        f.create_dataset("k", shape=(8192, 16384), dtype="f4", chunks=(256, 256),
                         fillvalue=1.0)
    with h5py.File(put("hdf5 outside/expanding", "gzip_bomb.h5"), "w") as f:
        d = f.create_dataset("k", shape=(4096, 16384), dtype="f4", chunks=(256, 16384),
                             compression="gzip")
        chunk = zlib.compress(bytes(256 * 16384 * 4), 9)
        for i in range(16):
            d.id.write_direct_chunk((i * 256, 0), chunk)

    # -- ONNX external data
    put("onnx external data", "ext_escape.onnx",
        _onnx_model(_onnx_external("w", "../outside/secret.bin")), external_data=True)
    put("onnx external data", "ext_absolute.onnx",
        _onnx_model(_onnx_external("w", secret)), external_data=True)
    os.symlink(secret, os.path.join(models, "link_to_secret.bin"))
    put("onnx external data", "ext_symlink_out.onnx",
        _onnx_model(_onnx_external("w", "link_to_secret.bin")), external_data=True)
    os.symlink(os.path.join(outside, "fifo.bin"), os.path.join(models, "fifo_link.bin"))
    os.mkfifo(os.path.join(models, "fifo_in.bin"))
    put("onnx external data", "ext_fifo.onnx",
        _onnx_model(_onnx_external("w", "fifo_in.bin")), external_data=True)
    put("onnx external data", "ext_not_asked.onnx",
        _onnx_model(_onnx_external("w", "weights.bin")))
    put("onnx external data", "ext_too_short.onnx",
        _onnx_model(_onnx_external("w", "weights.bin", length=4000)), external_data=True)

    # -- huge declared shapes, every format
    big = TensorProto()
    big.name, big.data_type = "w", TensorProto.FLOAT
    big.dims.extend([1_000_000, 1_000_000, 1, 1])
    big.raw_data = w.tobytes()
    put("huge declared shapes", "huge.onnx", _onnx_model(big))
    big2 = TensorProto()
    big2.name, big2.data_type = "w", TensorProto.FLOAT
    big2.dims.extend([64, 64, 3, 3])
    big2.raw_data = w.tobytes()
    put("huge declared shapes", "shape_mismatch.onnx", _onnx_model(big2))
    put("huge declared shapes", "huge.safetensors", _safetensors(
        {"c.weight": {"dtype": "F32", "shape": [10**6, 10**6, 3, 3],
                      "data_offsets": [0, 36 * 10**12]}}, w.tobytes()))
    put("huge declared shapes", "huge_header_len.safetensors",
        struct.pack("<Q", 2**62) + b"{}")
    put("huge declared shapes", "huge.npz",
        _npz_member("c.weight.npy", _npy_header((10**6, 10**6, 3, 3)) + w.tobytes()))
    put("huge declared shapes", "huge_legacy.pt", _legacy_torch(10**11, w.tobytes()))
    put("huge declared shapes", "huge_1gb_legacy.pt", _legacy_torch(256 * MB, w.tobytes()))
    with h5py.File(put("huge declared shapes", "huge_dataspace.h5"), "w") as f:
        f.create_dataset("k", shape=(2**40,), dtype="f8", chunks=(1024,))
    put("huge declared shapes", "storage_short.pth",
        _rezip(good_pt, {"data/0": _stored(w.tobytes()[:16])}))

    # -- truncated, byte-flipped, empty, garbage
    for name, data in (("npz", good_npz), ("pt", good_pt), ("safetensors", good_st),
                       ("onnx", good_onnx)):
        put("truncated", f"truncated.{name}", data[: len(data) // 2])
    h5_good = open(os.path.join(models, "good.h5"), "rb").read()
    put("truncated", "truncated.h5", h5_good[: len(h5_good) // 2])
    data_at = good_npz.index(w.tobytes()[:16]) + 8
    put("byte-flipped (format has a checksum)", "flipped.npz", _flip(good_npz, data_at))
    put("byte-flipped (format has a checksum)", "flipped.pt",
        _flip(good_pt, good_pt.index(w.tobytes()[:16]) + 8))
    kern = np.full((3, 3, 2, 4), 0.5, np.float32).tobytes()[:16]
    put("byte-flipped (format has a checksum)", "flipped_fletcher32.h5",
        _flip(h5_good, h5_good.index(kern) + 8))
    put("byte-flipped (format has a checksum)", "flipped_header.safetensors",
        _flip(good_st, 20))
    put("byte-flipped (format has a checksum)", "overlap.safetensors", _safetensors(
        {"a.weight": {"dtype": "F32", "shape": [4, 2, 3, 3], "data_offsets": [0, 288]},
         "b.weight": {"dtype": "F32", "shape": [4, 2, 3, 3], "data_offsets": [0, 288]}},
        w.tobytes()))
    put("byte-flipped (format has a checksum)", "duplicate_key.safetensors", _safetensors(
        None, w.tobytes(), raw_header=(
            b'{"c.weight": {"dtype": "F32", "shape": [4, 2, 3, 3], "data_offsets": [0, 288]},'
            b' "c.weight": {"dtype": "F32", "shape": [4, 2, 3, 3], "data_offsets": [0, 288]}}')))
    put("byte-flipped (format has a checksum)", "deep_json.safetensors", _safetensors(
        None, b"", raw_header=b"[" * 100_000 + b"]" * 100_000))
    st_flip = _flip(good_st, len(good_st) - 10)
    put("byte-flipped data (no checksum in the format)", "flipped_data.safetensors", st_flip,
        expect="undetectable")
    on_flip = _flip(good_onnx, good_onnx.index(w.tobytes()[:16]) + 8)
    put("byte-flipped data (no checksum in the format)", "flipped_data.onnx", on_flip,
        expect="undetectable")
    for ext in ("npz", "pt", "pth", "safetensors", "onnx", "h5"):
        put("empty files", f"empty.{ext}", b"")
        put("garbage", f"garbage.{ext}", b"\x00\xffnot a model at all" * 7)
    put("garbage", "deep_nesting.onnx", b"\x3a\x02" * 2000)  # graph->? nested messages

    # -- directories, FIFOs, symlinks to devices and outside files
    for ext in ("npz", "pt", "safetensors", "onnx", "h5"):
        os.mkdir(os.path.join(models, f"dir.{ext}"))
        put("directories", f"dir.{ext}")
        os.mkfifo(os.path.join(models, f"fifo.{ext}"))
        put("FIFOs", f"fifo.{ext}")
        os.symlink("/dev/zero", os.path.join(models, f"zero.{ext}"))
        put("symlinks to devices", f"zero.{ext}")
        os.symlink(os.path.join(outside, "fifo.bin"), os.path.join(models, f"fifo_out.{ext}"))
        put("symlinks to devices", f"fifo_out.{ext}")
    for name, data in (("npz", good_npz), ("pt", good_pt), ("safetensors", good_st),
                       ("onnx", good_onnx), ("h5", h5_good)):
        target = os.path.join(outside, f"real.{name}")
        with open(target, "wb") as fh:
            fh.write(data)
        os.symlink(target, os.path.join(models, f"link_out.{name}"))
        put("symlinks to files outside", f"link_out.{name}")
    return cases


# --------------------------------------------------------------------- child side
def _hwm_reset() -> int:
    """Reset the peak-RSS counter; return the current RSS in bytes (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _status("VmRSS")


def _status(key: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def run_child(root: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Load every case in this process; one result dict per case."""
    import signal

    if any(c["name"].endswith((".pt", ".pth", ".bin", ".ckpt")) for c in cases):
        import torch  # noqa: F401  (import cost not charged to the first file)

    from modelcs.adapters import UnsafeFileError, conv_layers

    outside = os.path.realpath(os.path.join(root, "outside"))
    touched: list[str] = []

    def hook(event: str, args: Any) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            p = os.fsdecode(args[0]) if not isinstance(args[0], os.PathLike) else \
                os.fspath(args[0])
            if isinstance(p, str) and os.path.realpath(p).startswith(outside):
                touched.append(p)

    sys.addaudithook(hook)
    signal.signal(signal.SIGALRM, _alarm)
    results = []
    for c in cases:
        path = os.path.join(root, "models", c["name"])
        before = len(touched)
        rss0 = _hwm_reset()
        t0 = time.perf_counter()
        outcome, message = "", ""
        signal.setitimer(signal.ITIMER_REAL, 3 * TIME_LIMIT)
        try:
            layers = conv_layers(path, **c["kwargs"])
            outcome, message = "loaded", f"{len(layers)} layer(s)"
        except UnsafeFileError as exc:
            outcome, message = "UnsafeFileError", str(exc)
        except _Timeout:
            outcome, message = "hang", f"no answer within {3 * TIME_LIMIT} s"
        except BaseException as exc:  # noqa: BLE001 - the audit records everything
            outcome, message = type(exc).__name__, str(exc)[:300]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - t0
        peak = _status("VmHWM") - rss0
        results.append({**c, "outcome": outcome, "message": message, "seconds": seconds,
                        "extra_bytes": max(peak, 0), "outside_opened": touched[before:],
                        "names_file": c["name"] in message})
    return results


def classify(r: dict[str, Any]) -> str:
    """'clear' (refused as asked), 'ok' (a control loaded), or a short reason it is not."""
    if r["expect"] == "load":
        return "ok" if r["outcome"] == "loaded" else f"control failed: {r['outcome']}"
    if r["outside_opened"]:
        return "read outside"
    if r["expect"] == "undetectable" and r["outcome"] == "loaded":
        return "loaded (no checksum)"
    if r["outcome"] != "UnsafeFileError":
        return r["outcome"]
    if not r["names_file"]:
        return "message lacks file"
    if r["seconds"] > TIME_LIMIT:
        return "too slow"
    if r["extra_bytes"] > MEM_LIMIT:
        return "too much memory"
    return "clear"


def run_corpus(root: str, cases: list[Case]) -> list[dict[str, Any]]:
    """Run every case in one child process and return its per-file results."""
    here = os.path.dirname(os.path.abspath(__file__))
    payload = json.dumps({"root": root, "cases": [c.__dict__ for c in cases]})
    env = dict(os.environ)
    repo = os.path.dirname(here)
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child"], input=payload, text=True,
        capture_output=True, timeout=300, env=env, cwd=root,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"audit child failed:\n{proc.stderr[-3000:]}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------- API audit
def api_calls() -> list[tuple[str, str, str]]:
    """(label, code, name the message must mention) of public calls with hostile sizes."""
    return [
        ("ConvOperator.random huge filters",
         "modelcs.ConvOperator.random(100000, 10000, 3, 100)", "out_channels=100000"),
        ("to_dense of a large operator",
         "modelcs.ConvOperator.random(512, 512, 3, (224, 224), rng=0, dtype='float32')"
         ".to_dense()", "to_dense"),
        ("to_sparse of a large operator",
         "modelcs.ConvOperator.random(64, 64, 3, (4000, 4000), rng=0).to_sparse()",
         "to_sparse"),
        ("sample_model_sparse huge batch",
         "modelcs.sample_model_sparse(modelcs.ModelSparse(3), (96, 28), n_trials=10**12,"
         " rng=0)", "n_trials=1000000000000"),
        ("ModelSparse.sample huge batch",
         "modelcs.ModelSparse(3).sample((96, 28), 10**12, rng=0)", "n=1000000000000"),
        ("rip_ratios huge n_trials",
         "modelcs.rip_ratios(modelcs.ConvOperator.random(8, 2, 3, 16, rng=0).T,"
         " modelcs.ModelSparse(2), n_trials=10**12, rng=0)", "n_trials=1000000000000"),
        ("coherence huge bank",
         "modelcs.coherence(np.lib.stride_tricks.as_strided(np.ones(1, np.float32),"
         " (100000, 4, 3), (0, 0, 0)), shifts=False)", "K=100000"),
        ("phase_transition huge grid",
         "modelcs.phase_transition(K=8, l=3, D=32, ks=[1], channels=[2], trials=10**12,"
         " progress=False)", "trials=1000000000000"),
        ("estimate_delta huge n_trials",
         "modelcs.estimate_delta(modelcs.ConvOperator.random(8, 2, 3, 16, rng=0).T,"
         " modelcs.ModelSparse(2), n_trials=10**12, rng=0)", "n_trials=1000000000000"),
        ("dottest huge batch",
         "modelcs.dottest(modelcs.ConvOperator.random(8, 2, 3, 16, rng=0), batch=10**12)",
         "batch=1000000000000"),
        ("frame_bounds, circular operator, huge input",
         "modelcs.frame_bounds(modelcs.ConvOperator.random(64, 64, 3, (10**5, 10**4),"
         " padding='circular', rng=0))", "1000000000 frequencies"),
        ("frame_bounds, huge input (Lanczos)",
         "modelcs.frame_bounds(modelcs.ConvOperator.random(4, 2, 3, 10**9, rng=0))",
         "shape (3999999992, 2000000000)"),
        ("figure2_experiment huge n_trials",
         "modelcs.experiments.figure2.figure2_experiment(n_trials=10**12)",
         "n_trials=1000000000000"),
        ("coherence_table huge layer sizes",
         "modelcs.experiments.coherence_tables.coherence_table([dict(layer='x', K=100000,"
         " M=10000, l=3, D=14, stride=1)], draws=1)", "(100000, 10000, 3, 3)"),
        ("CLI rip --K 100000 --M 10000",
         "modelcs.cli.main(['rip', '--K', '100000', '--M', '10000'])", "--K 100000"),
        ("CLI rip --trials 10**12",
         "modelcs.cli.main(['rip', '--trials', '1000000000000'])", "--trials 1000000000000"),
    ]


def run_api_child(calls: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    import contextlib
    import signal

    import modelcs
    import modelcs.cli
    import modelcs.experiments.coherence_tables
    import modelcs.experiments.figure2  # noqa: F401  (used by the evaluated calls)

    signal.signal(signal.SIGALRM, _alarm)
    out = []
    for label, code, mention in calls:
        rss0 = _hwm_reset()
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, 20.0)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                res = eval(code, {"modelcs": modelcs, "np": np})  # noqa: S307 - fixed list
            outcome, message = ("returned", repr(res)[:80])
            if label.startswith("CLI"):
                outcome, message = f"exit {res}", err.getvalue().strip()
        except _Timeout:
            outcome, message = "hang", "no answer within 20 s"
        except BaseException as exc:  # noqa: BLE001
            outcome, message = type(exc).__name__, str(exc)[:300]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.append({"label": label, "code": code, "mention": mention, "outcome": outcome,
                    "message": message,
                    "seconds": time.perf_counter() - t0,
                    "extra_bytes": max(_status("VmHWM") - rss0, 0)})
    return out


def classify_api(r: dict[str, Any]) -> str:
    """'clear': a ValueError-family refusal (one line, exit 2 for the CLI) that names the
    parameter, within the memory bound; 'unclear' otherwise."""
    msg = r["message"]
    if r["mention"] not in msg or "Unable to allocate" in msg or r["extra_bytes"] > MEM_LIMIT:
        return "unclear"
    if r["label"].startswith("CLI"):
        one_line = len(msg.splitlines()) == 1 and "Traceback" not in msg
        return "clear" if r["outcome"] == "exit 2" and one_line else "unclear"
    return "clear" if r["outcome"] in ("ValueError", "MemoryBudgetError") else "unclear"


def run_api(calls: list[tuple[str, str, str]] | None = None) -> list[dict[str, Any]]:
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(here) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--api-child"],
        input=json.dumps(calls or api_calls()), text=True, capture_output=True, timeout=600,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"API audit child failed:\n{proc.stderr[-3000:]}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------------- tables
OWNED_ELSEWHERE = [
    ("coherence(shifts=True) with input_shape ~1e6: minutes (O(n^2) lag classes), not memory",
     "i14 (mutual_coherence)"),
    ("pinv_reconstruct / frame_bounds / singular_values at extreme scales", "i16"),
    ("ModelSparse.sample dtype=int/bool, dottest batch=0, iht complex z0", "i13"),
    ("lasso with y ~ 1e300 (inf objective, NaN gap)", "i13/i16"),
    ("l1_support_recovery names bad x 'y'", "i13"),
]


def tables(results: list[dict[str, Any]], api: list[dict[str, Any]]) -> str:
    cats: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        cats.setdefault(r["category"], []).append(r)
    lines = ["| category | files tried | clear refusals | anything else | max s | max extra MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for cat, rs in cats.items():
        kinds = [classify(r) for r in rs]
        good = sum(k in ("clear", "ok") for k in kinds)
        other = sorted({f"{r['name']}: {k}" for r, k in zip(rs, kinds, strict=True)
                        if k not in ("clear", "ok")})
        note = " (loaded, as expected)" if cat == "valid controls" else ""
        lines.append(
            f"| {cat} | {len(rs)} | {good}{note}"
            f" | {'; '.join(other) or 'none'} | {max(r['seconds'] for r in rs):.2f} | "
            f"{max(r['extra_bytes'] for r in rs) / MB:.0f} |"
        )
    lines += ["", "| public API call (hostile size) | outcome | clear? | s | extra MB |",
              "| --- | --- | --- | --- | --- |"]
    for r in api:
        lines.append(f"| {r['label']} | {r['outcome']}: {r['message'][:90]} | "
                     f"{classify_api(r)} | {r['seconds']:.2f} | {r['extra_bytes'] / MB:.0f} |")
    n_unclear = sum(classify_api(r) != "clear" for r in api)
    lines.append(f"\nAPI calls tried: {len(api)}, unclear errors left: {n_unclear}")
    lines += ["", "| issue-18 item | owner |", "| --- | --- |"]
    lines += [f"| {a} | {b} |" for a, b in OWNED_ELSEWHERE]
    return "\n".join(lines)


def main() -> int:
    if "--child" in sys.argv:
        payload = json.loads(sys.stdin.read())
        print(json.dumps(run_child(payload["root"], payload["cases"])))
        return 0
    if "--api-child" in sys.argv:
        calls = [tuple(c) for c in json.loads(sys.stdin.read())]
        print(json.dumps(run_api_child(calls)))  # type: ignore[arg-type]
        return 0
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        cases = build_corpus(root)
        results = run_corpus(root, cases)
        api = run_api()
        print(tables(results, api))
        print(f"\n({len(cases)} files, {time.perf_counter() - t0:.1f} s; load average "
              f"{os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
