"""KeyTech Panel: warehouse and estimation layer for Pi & Luo's intelligent-manufacturing pilot study.

Bundled data is synthetic: results computed on it demonstrate the pipeline and are not findings.
"""

__version__ = "0.1.0"
