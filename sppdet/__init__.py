"""sppdet: SPP-net object detection (He et al., 2014) as a command-line pipeline.

The library lives in this package; the Click commands in ``sppdet.cli`` and the stage
functions in ``sppdet.stages`` (installed from the top-level ``cli/`` and ``stages/`` folders).
"""

__version__ = "0.1.0"
