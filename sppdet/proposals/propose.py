"""One front door for the per-image proposal methods.

A stage calls :func:`propose_image` per image with a method name and a parameter dataclass;
``dataclasses.asdict(params)`` plus the method name is what it records in the artifact.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from sppdet.errors import ConfigError
from sppdet.proposals.common import ProposalResult
from sppdet.proposals.edge_boxes import EdgeBoxesParams, edge_boxes
from sppdet.proposals.selective_search import SelectiveSearchParams, selective_search

# Method name -> parameter dataclass it takes.
METHODS: dict[str, type] = {
    "ss-fast": SelectiveSearchParams,
    "ss-quality": SelectiveSearchParams,
    "edgeboxes": EdgeBoxesParams,
}

ProposalParams = SelectiveSearchParams | EdgeBoxesParams


def default_params(method: str) -> ProposalParams:
    """The default parameter dataclass of ``method``."""
    return _params_class(method)()


def params_from_dict(method: str, values: dict) -> ProposalParams:
    """Rebuild the parameters of ``method`` from a record (the inverse of ``asdict``).

    Raises:
        ConfigError: unknown method or unknown parameter names.
    """
    params_class = _params_class(method)
    known = set(params_class.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {unknown} for proposal method {method!r}; "
            f"expected some of {sorted(known)}"
        )
    return params_class(**values)


def params_record(method: str, params: ProposalParams) -> dict:
    """A JSON-serialisable record of what made a proposal set: method and parameters."""
    _check_params(method, params)
    return {"method": method, "params": asdict(params)}


def propose_image(
    image_rgb: np.ndarray, method: str, params: ProposalParams | None = None
) -> ProposalResult:
    """Object proposals of one image.

    Args:
        image_rgb: uint8 ``[H, W, 3]`` RGB image.
        method: ``"ss-fast"``, ``"ss-quality"`` (selective search) or ``"edgeboxes"``.
        params: :class:`SelectiveSearchParams` for the selective search methods,
            :class:`EdgeBoxesParams` for EdgeBoxes; ``None`` takes the defaults.

    Returns:
        :class:`ProposalResult`: float32 ``[N, 4]`` xyxy boxes (0-based continuous, original
        pixels, rank order) and float32 ``[N]`` scores (``None`` for selective search).

    Raises:
        ConfigError: unknown method, or parameters of the wrong kind for it.
        ModelError: the EdgeBoxes edge model file is missing or unreadable.
        ProposalError: a per-image failure (bad image, OpenCV error); record it and go on.
    """
    params = default_params(method) if params is None else params
    _check_params(method, params)
    if method == "edgeboxes":
        return edge_boxes(image_rgb, params)
    return selective_search(image_rgb, params, mode=method.removeprefix("ss-"))


def _params_class(method: str) -> type:
    if method not in METHODS:
        raise ConfigError(f"unknown proposal method {method!r}; expected one of {list(METHODS)}")
    return METHODS[method]


def _check_params(method: str, params: object) -> None:
    expected = _params_class(method)
    if not isinstance(params, expected):
        raise ConfigError(
            f"proposal method {method!r} takes {expected.__name__}, got {type(params).__name__}"
        )
