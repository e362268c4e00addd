"""keytech keeps OpenBLAS at one thread unless the user set OPENBLAS_NUM_THREADS, also when numpy
and scipy were imported first (their OpenBLAS has then read the variable already); and pyfixest's
Rust demeaner at one thread unless the user set RAYON_NUM_THREADS."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, numpy, scipy.linalg
numpy.ones((4, 4)) @ numpy.ones((4, 4)); scipy.linalg.cholesky(numpy.eye(3))
import keytech
print(json.dumps(keytech.openblas_threads_of_loaded_libraries()))
"""


def _threads(env_threads: str | None) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = env_threads
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_numpy_and_scipy_imported_first_still_get_one_thread():
    threads = _threads(None)
    # both bundled libraries found (numpy's 64-bit-integer one and scipy's), each at one thread
    assert len(threads) == 2 and any("64_" in name for name in threads)
    assert set(threads.values()) == {1}


def test_the_users_setting_is_kept():
    # OpenBLAS caps its threads at the CPUs it sees: 2 on the reference machine, where this also
    # shows that the getter reports more than one thread when more are in force
    assert set(_threads("2").values()) == {min(2, os.cpu_count() or 1)}


def _demeaner_threads(env_threads: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAYON_NUM_THREADS"}
    if env_threads is not None:
        env["RAYON_NUM_THREADS"] = env_threads
    probe = "import os, keytech; print(os.environ['RAYON_NUM_THREADS'])"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_pyfixest_demeaner_gets_one_thread_unless_the_user_set_it():
    """pyfixest's Rust demeaner sums over as many threads as the machine has cores, so its digits
    (and Table 4 (1)'s IFE coefficient in the 5th) depended on the machine: keytech pins it to one
    thread (keytech/__init__.py), the spec workers of --jobs inherit it; a user's value is kept."""
    assert _demeaner_threads(None) == "1"
    assert _demeaner_threads("3") == "3"


def _blas_cores(env_core: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if env_core is not None:
        env["OPENBLAS_CORETYPE"] = env_core
    probe = ("import json, keytech, numpy, scipy.linalg; numpy.ones((4, 4)) @ numpy.ones((4, 4)); "
             "scipy.linalg.cholesky(numpy.eye(3)); print(json.dumps([keytech.openblas_cores_of_loaded_libraries(), "
             "keytech.thread_settings()['blas_core']]))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    cores, recorded = json.loads(out.stdout.strip().splitlines()[-1])
    assert recorded == ",".join(sorted(set(cores.values())))  # what results.runs records
    return cores


def test_avx2_machines_run_the_haswell_kernels_unless_the_user_chose():
    """OpenBLAS picks kernels by CPU and kernels of different generations round differently (an
    AVX-512 machine's SkylakeX kernels moved the demo's interactive-FE coefficients by ~1e-7 and
    broke bit-level frozen values): keytech pins the Haswell kernels on every x86-64 CPU with AVX2
    and FMA, before numpy loads; a user's OPENBLAS_CORETYPE is kept."""
    import keytech

    cores = _blas_cores(None)
    assert len(cores) == 2  # numpy's and scipy's OpenBLAS
    if keytech.pinned_openblas_core():
        assert set(cores.values()) == {keytech.PINNED_OPENBLAS_CORE}
        # a user's choice wins (Sandybridge: AVX kernels, which every AVX2 CPU runs too)
        assert set(_blas_cores("Sandybridge").values()) == {"Sandybridge"}


def test_the_cpu_check_reads_the_flags_line(tmp_path, monkeypatch):
    import builtins
    import platform

    import keytech

    real_open = builtins.open

    def cpuinfo(flags: str):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(path if p == "/proc/cpuinfo" else p, *a, **k))

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    cpuinfo("fpu sse2 avx avx2 fma bmi2")
    assert keytech._cpu_runs_haswell_kernels()
    cpuinfo("fpu sse2 avx avx2")  # no FMA: the Haswell kernels would fault
    assert not keytech._cpu_runs_haswell_kernels()
    cpuinfo("fpu sse2 avx avx512f fma")
    assert not keytech._cpu_runs_haswell_kernels()
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    cpuinfo("fpu sse2 avx avx2 fma")
    assert not keytech._cpu_runs_haswell_kernels()
