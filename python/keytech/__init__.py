"""KeyTech Panel: warehouse and estimation layer for Pi & Luo's intelligent-manufacturing pilot study.

Bundled data is synthetic: results computed on it demonstrate the pipeline and are not findings.

BLAS threads: unless the user set it, ``OPENBLAS_NUM_THREADS`` is set to 1 before numpy is
imported. The estimation layer solves many small systems (permutation reshuffles, placebo draws,
IFE iterations); on the 2-core reference machine under load, OpenBLAS's worker threads made the
full paper-scale estimation 3.7× slower (275 s vs 75 s, docs/performance.md). Set the variable
yourself (e.g. ``OPENBLAS_NUM_THREADS=8 keytech estimate``) to override. When numpy or scipy was
imported before keytech (a notebook, a test file), their OpenBLAS has already read the variable;
then keytech sets the thread count of the OpenBLAS libraries already loaded to 1 as well
(``openblas_threads_of_loaded_libraries`` tells what is in force).

Demeaner threads: unless the user set it, ``RAYON_NUM_THREADS`` is set to 1 too. pyfixest's Rust
fixed-effect solver (the LSMR ``within`` demeaner with its additive Schwarz preconditioner) sums in
parallel over as many threads as the machine has cores, so its results depended on the machine in
the last digits, and through the interactive-FE iterations visibly: on the paper-scale synthetic
warehouse Table 4 (1)'s policy coefficient was 0.14975469 with 2 threads and 0.14975884 with 4
(docs/estimator-conventions.md). With one thread every machine computes the same numbers. The
speed is about the same: the bench's paper-scale estimation with ``--jobs 2`` on 2 cores took
66.0-66.5 s against 68.0-71.8 s (alternating runs); a single ``--jobs 1`` process was ≈ 13 %
slower in one comparison (use ``--jobs``). The pool reads the variable when
pyfixest first demeans, so setting it here (keytech is imported before any estimate) is in time;
``RAYON_NUM_THREADS=8 keytech estimate`` overrides it, at the price of machine-dependent digits.

BLAS kernels: unless the user set it, ``OPENBLAS_CORETYPE`` is set to ``Haswell`` on x86-64 CPUs
that have AVX2 and FMA (``/proc/cpuinfo``), before numpy is imported. OpenBLAS otherwise picks its
kernels by CPU, and kernels of different CPU generations round differently: on an AVX-512 machine
(``SkylakeX`` kernels) the demo's Table 4 (1) interactive-FE coefficients moved by ~1e-7 relative
against an AVX2 machine and bit-level frozen values failed (docs/estimator-conventions.md). The
Haswell kernels run on every x86-64 CPU of the last decade with AVX2, so those machines compute the
same digits. Other CPUs (no AVX2, ARM, macOS without ``/proc/cpuinfo``) keep OpenBLAS's own choice.
Like the thread count, the variable is read when OpenBLAS loads: if numpy or scipy was imported
before keytech, their kernels are already chosen (``openblas_cores_of_loaded_libraries`` tells
which are in force; the tests' conftest imports keytech first, and every Makefile target starts
in keytech).
"""

import ctypes as _ctypes
import glob as _glob
import os as _os
import sys as _sys

# numpy's and scipy's wheels each bundle one OpenBLAS: (folder beside the package, setter, getter)
_OPENBLAS_LIBRARIES = (
    ("numpy.libs", "libscipy_openblas64_*.so", "scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy.libs", "libscipy_openblas-*.so", "scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
)
# the kernel family OpenBLAS runs, by the setter's name (same library, same suffix)
_CORENAME_GETTERS = {
    "scipy_openblas_set_num_threads64_": "scipy_openblas_get_corename64_",
    "scipy_openblas_set_num_threads": "scipy_openblas_get_corename",
}
PINNED_OPENBLAS_CORE = "Haswell"


def _loaded_openblas():
    """(library path, ctypes handle, setter name, getter name) of each bundled OpenBLAS that is
    already loaded in this process (RTLD_NOLOAD: nothing is loaded by looking)."""
    for site in dict.fromkeys(_sys.path):
        for folder, pattern, setter, getter in _OPENBLAS_LIBRARIES:
            for path in _glob.glob(_os.path.join(site or ".", folder, pattern)):
                try:
                    handle = _ctypes.CDLL(path, mode=_os.RTLD_NOLOAD | _os.RTLD_LAZY)
                except (OSError, AttributeError):
                    continue
                if hasattr(handle, setter) and hasattr(handle, getter):
                    yield path, handle, setter, getter


def openblas_threads_of_loaded_libraries() -> dict[str, int]:
    """Threads of every bundled OpenBLAS loaded in this process, by library file name."""
    return {_os.path.basename(path): int(getattr(handle, getter)())
            for path, handle, _, getter in _loaded_openblas()}


def openblas_cores_of_loaded_libraries() -> dict[str, str]:
    """Kernel family (OpenBLAS's core name, e.g. ``Haswell``) of every bundled OpenBLAS loaded in
    this process, by library file name."""
    cores = {}
    for path, handle, setter, _ in _loaded_openblas():
        getter = getattr(handle, _CORENAME_GETTERS[setter], None)
        if getter is not None:
            getter.restype = _ctypes.c_char_p
            cores[_os.path.basename(path)] = getter().decode()
    return cores


def _cpu_runs_haswell_kernels() -> bool:
    """True on an x86-64 CPU with AVX2 and FMA, as Linux's /proc/cpuinfo lists its flags."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return {"avx2", "fma"} <= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


def pinned_openblas_core() -> str | None:
    """The OpenBLAS kernels keytech pins on this CPU (``Haswell`` on x86-64 with AVX2 and FMA), or
    None where OpenBLAS keeps its own choice."""
    return PINNED_OPENBLAS_CORE if _cpu_runs_haswell_kernels() else None


# the same BLAS kernels on every AVX2 machine, for the same digits (see above)
if "OPENBLAS_CORETYPE" not in _os.environ and pinned_openblas_core():
    _os.environ["OPENBLAS_CORETYPE"] = PINNED_OPENBLAS_CORE

if "OPENBLAS_NUM_THREADS" not in _os.environ:
    _os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if "numpy" in _sys.modules or "scipy" in _sys.modules:
        for _path, _handle, _setter, _getter in _loaded_openblas():
            getattr(_handle, _setter)(1)

# one thread for pyfixest's Rust demeaner, for the same numbers on every machine (see above)
_os.environ.setdefault("RAYON_NUM_THREADS", "1")


def thread_settings() -> dict[str, str | None]:
    """The thread counts and the BLAS kernels the digits depend on, as this process will use them
    (set above unless the user set them; ``blas_core`` is what the loaded OpenBLAS runs, or the
    variable when none is loaded yet): recorded with each estimation run and in the bench's machine
    record."""
    cores = sorted(set(openblas_cores_of_loaded_libraries().values()))
    return {"demeaner": _os.environ.get("RAYON_NUM_THREADS"), "blas": _os.environ.get("OPENBLAS_NUM_THREADS"),
            "blas_core": ",".join(cores) if cores else _os.environ.get("OPENBLAS_CORETYPE")}


__version__ = "0.1.0"
