"""KeyTech Panel: warehouse and estimation layer for Pi & Luo's intelligent-manufacturing pilot study.

Bundled data is synthetic: results computed on it demonstrate the pipeline and are not findings.

BLAS threads: unless the user set it, ``OPENBLAS_NUM_THREADS`` is set to 1 before numpy is
imported. The estimation layer solves many small systems (permutation reshuffles, placebo draws,
IFE iterations); on the 2-core reference machine under load, OpenBLAS's worker threads made the
full paper-scale estimation 3.7× slower (275 s vs 75 s, docs/performance.md). Set the variable
yourself (e.g. ``OPENBLAS_NUM_THREADS=8 keytech estimate``) to override.
"""

import os as _os

_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
