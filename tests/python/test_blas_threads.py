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
