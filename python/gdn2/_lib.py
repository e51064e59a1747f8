"""ctypes binding of libgdn2.so: the C structs of include/gdn2_ops.h and include/gdn2_cuda.h, the
function prototypes, and the error translation (a non-zero status becomes a Python exception with
gdn2_last_error()'s message).

The library is looked up, in order: the environment variable GDN2_LIBRARY (a path), the copy
installed inside this package (pip install), the project's build/libgdn2.so when the package is
used from a source checkout (python/gdn2 -> ../../build)."""
import ctypes
import os
import sys

c_int, c_int64, c_float, c_size_t, c_void_p = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_size_t, ctypes.c_void_p
P = c_void_p  # every tensor pointer is passed as an address

GDN2_OK, GDN2_ERR_ARG, GDN2_ERR_IO, GDN2_ERR_FORMAT, GDN2_ERR_NOMEM, GDN2_ERR_UNSUPPORTED, GDN2_ERR_DEVICE = range(7)
GDN2_STATE_F32, GDN2_STATE_BF16 = 0, 1
GDN2_CUDA_F32, GDN2_CUDA_BF16 = 0, 1


class Gdn2Error(RuntimeError):
    """A gdn2 C function failed; .status is its GDN2_ERR_* code, the message is gdn2_last_error()."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Gdn2ArgumentError(Gdn2Error, ValueError):
    """GDN2_ERR_ARG: a bad shape, option or value."""


class Gdn2Unsupported(Gdn2Error, NotImplementedError):
    """GDN2_ERR_UNSUPPORTED: a feature not built in (e.g. CUDA) or no device."""


class Dims(ctypes.Structure):
    _fields_ = [("B", c_int64), ("T", c_int64), ("H", c_int64), ("HV", c_int64), ("K", c_int64), ("V", c_int64)]


class Opts(ctypes.Structure):
    _fields_ = [("scale", c_float), ("qk_l2norm", c_int), ("gate_in_kernel", c_int), ("lower_bound", c_float),
                ("cu_seqlens", P), ("n_seqs", c_int64), ("n_threads", c_int), ("workspace", P),
                ("workspace_size", c_size_t), ("trust_values", c_int)]


_FWD = [("q", P), ("k", P), ("v", P), ("g", P), ("b", P), ("w", P), ("h0", P), ("A_log", P), ("dt_bias", P),
        ("o", P), ("ht", P)]
_BWD = [("d_o", P), ("dht", P), ("dq", P), ("dk", P), ("dv", P), ("dg", P), ("db", P), ("dw", P), ("dh0", P),
        ("dA_log", P), ("ddt_bias", P)]


class FwdTensors(ctypes.Structure):  # gdn2_fwd_tensors and gdn2_fwd_tensors_f64 (same layout)
    _fields_ = _FWD


class BwdTensors(ctypes.Structure):  # gdn2_bwd_tensors and gdn2_bwd_tensors_f64
    _fields_ = _BWD


class DecodeTensors(ctypes.Structure):
    _fields_ = [("q", P), ("k", P), ("v", P), ("g", P), ("b", P), ("w", P), ("A_log", P), ("dt_bias", P),
                ("o", P), ("state_pool", P), ("n_slots", c_int64), ("slots", P), ("state_dtype", c_int)]


class CudaFwdArgs(ctypes.Structure):
    _fields_ = [("dtype", c_int), ("q", P), ("k", P), ("v", P), ("b", P), ("w", P), ("g", P), ("h0", P),
                ("A_log", P), ("dt_bias", P), ("o", P), ("ht", P), ("keep_for_backward", c_int),
                ("reserve", P), ("reserve_size", ctypes.c_size_t)]


class CudaBwdArgs(ctypes.Structure):
    _fields_ = [("d_o", P), ("dht", P), ("dq", P), ("dk", P), ("dv", P), ("db", P), ("dw", P), ("dg", P),
                ("dh0", P), ("dA_log", P), ("ddt_bias", P), ("reuse_forward", c_int)]


class CudaRecurrentArgs(ctypes.Structure):
    _fields_ = [("dtype", c_int), ("q", P), ("k", P), ("v", P), ("b", P), ("w", P), ("g", P), ("A_log", P),
                ("dt_bias", P), ("o", P), ("state_pool", P), ("n_slots", c_int64), ("slots", P), ("snapshots", P),
                ("state_dtype", c_int), ("slot_stride", c_int64),
                ("snap_slots", P), ("g_dtype", c_int)]


def _candidates():
    env = os.environ.get("GDN2_LIBRARY")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, "libgdn2.so"),
            os.path.join(os.path.dirname(os.path.dirname(here)), "build", "libgdn2.so")]


def _needs_cuda_libs(path):
    """Whether the library links the CUDA runtime / NCCL / cuBLAS (a CUDA build): their names in
    its dynamic string table, which sits near the start of the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8 << 20)
    except OSError:
        return False
    return any(n in head for n in (b"libcudart.so", b"libnccl.so", b"libcublas"))


def _preload_torch(path):
    """A CUDA build of libgdn2 links libcudart / libcublasLt / libnccl by soname. When it is
    loaded first, a later `import torch` binds torch's CUDA libraries to those copies (same
    sonames, possibly older: e.g. "libtorch_cuda.so: undefined symbol: ncclCommResume") and
    fails. So when torch is installed and not yet imported, import it first: then libgdn2 binds to
    torch's (newer) copies. GDN2_PRELOAD_TORCH=0 turns this off."""
    if os.environ.get("GDN2_PRELOAD_TORCH", "1") in ("0", "") or "torch" in sys.modules:
        return
    if not _needs_cuda_libs(path):
        return
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return
    try:
        import torch  # noqa: F401
    except Exception:  # noqa: BLE001  (a broken torch: load the library anyway)
        pass


def _load():
    tried = []
    for path in _candidates():
        if os.path.exists(path):
            _preload_torch(path)
            return ctypes.CDLL(path), path
        tried.append(path)
    raise ImportError("gdn2: libgdn2.so not found (tried %s); install the package with `pip install ./python` "
                      "or build it with `make lib-shared` and/or set GDN2_LIBRARY" % ", ".join(tried))


lib, path = _load()

_pd, _po = ctypes.POINTER(Dims), ctypes.POINTER(Opts)
_pf, _pb = ctypes.POINTER(FwdTensors), ctypes.POINTER(BwdTensors)
_PROTOS = {
    "gdn2_version": ([], ctypes.c_char_p),
    "gdn2_version_number": ([], c_int),
    "gdn2_last_error": ([], ctypes.c_char_p),
    "gdn2_clear_error": ([], None),
    "gdn2_ref_fwd": ([_pd, _po, _pf], c_int),
    "gdn2_ref_bwd": ([_pd, _po, _pf, _pb], c_int),
    "gdn2_recurrent_fwd": ([_pd, _po, _pf], c_int),
    "gdn2_chunk_fwd": ([_pd, _po, _pf], c_int),
    "gdn2_chunk_bwd": ([_pd, _po, _pf, _pb], c_int),
    "gdn2_chunk_saved_size": ([_pd, _po], c_size_t),
    "gdn2_chunk_fwd_save": ([_pd, _po, _pf, P, c_size_t], c_int),
    "gdn2_chunk_bwd_saved": ([_pd, _po, _pf, _pb, P, c_size_t], c_int),
    "gdn2_decode_step": ([_pd, _po, ctypes.POINTER(DecodeTensors)], c_int),
    "gdn2_decode_verify": ([_pd, _po, ctypes.POINTER(DecodeTensors), P], c_int),
    "gdn2_kda_recurrent_fwd": ([_pd, _po, _pf, P], c_int),
    "gdn2_kda_chunk_fwd": ([_pd, _po, _pf, P], c_int),
    "gdn2_kda_chunk_bwd": ([_pd, _po, _pf, P, _pb, P], c_int),
    "gdn2_gdn_recurrent_fwd": ([_pd, _po, _pf, P], c_int),
    "gdn2_gdn_chunk_fwd": ([_pd, _po, _pf, P], c_int),
    "gdn2_gdn_chunk_bwd": ([_pd, _po, _pf, P, _pb, P], c_int),
    "gdn2_cuda_available": ([], c_int),
    "gdn2_cuda_chunk_fwd": ([_pd, _po, ctypes.POINTER(CudaFwdArgs), P], c_int),
    "gdn2_cuda_chunk_bwd": ([_pd, _po, ctypes.POINTER(CudaFwdArgs), ctypes.POINTER(CudaBwdArgs), P], c_int),
    "gdn2_cuda_recurrent_fwd": ([_pd, _po, ctypes.POINTER(CudaRecurrentArgs), P], c_int),
    "gdn2_cuda_chunk_workspace_size": ([_pd, _po, c_int], c_size_t),
    "gdn2_cuda_chunk_call_workspace_size": ([_pd, _po, ctypes.POINTER(CudaFwdArgs), ctypes.POINTER(CudaBwdArgs)],
                                            c_size_t),
}
for _name, (_args, _res) in _PROTOS.items():
    _f = getattr(lib, _name)
    _f.argtypes, _f.restype = _args, _res


def last_error():
    return lib.gdn2_last_error().decode("utf-8", "replace")


def check(status, what):
    """Raise the exception for a non-zero gdn2 status (message: gdn2_last_error(), read in this
    thread right after the call: the C library keeps one message per thread)."""
    if status == GDN2_OK:
        return
    msg = last_error() or "%s failed with status %d" % (what, status)
    cls = {GDN2_ERR_ARG: Gdn2ArgumentError, GDN2_ERR_UNSUPPORTED: Gdn2Unsupported}.get(status, Gdn2Error)
    if status == GDN2_ERR_NOMEM:
        raise MemoryError(msg)
    raise cls(status, msg)


def call(name, *args):
    lib.gdn2_clear_error()
    check(getattr(lib, name)(*args), name)


def version():
    return lib.gdn2_version().decode()


def version_number():
    return lib.gdn2_version_number()


_cuda_ok = False


def cuda_available():
    """True if the library was built with CUDA and a device is present (a positive answer is
    remembered: the torch CUDA path asks on every call)."""
    global _cuda_ok
    if not _cuda_ok:
        _cuda_ok = bool(lib.gdn2_cuda_available())
    return _cuda_ok
