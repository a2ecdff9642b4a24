"""sppdet: SPP-net object detection (He et al., 2014) as a command-line pipeline.

The library lives in this package; the Click commands in ``sppdet.cli`` and the stage
functions in ``sppdet.stages`` (installed from the top-level ``cli/`` and ``stages/`` folders).
"""

__version__ = "0.1.0"

import warnings as _warnings

# joblib's process pool (loky) replaces a worker whose memory has grown by 300 MB since its
# first task (its guard against leaks) and then warns "A worker stopped while some jobs were
# given to the executor ... memory leak", although no task is lost: proposals and SVM mining
# workers grow that much by design (images, OpenCV buffers, feature caches). A worker that
# dies raises TerminatedWorkerError instead, which this does not hide.
_warnings.filterwarnings("ignore", category=UserWarning,
                         message="A worker stopped while some jobs were given to the executor")
