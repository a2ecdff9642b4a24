"""Object proposals: selective search and EdgeBoxes (OpenCV contrib), import, recall.

Per-image functions for the ``propose`` stage: :func:`propose_image` with a method name
(``"ss-fast"``, ``"ss-quality"``, ``"edgeboxes"``) and a parameter dataclass; proposals made
elsewhere are read by :mod:`sppdet.proposals.importers` and checked against the dataset;
:mod:`sppdet.proposals.recall` measures recall versus the number of boxes.
"""

from sppdet.proposals.common import ProposalError, ProposalResult
from sppdet.proposals.edge_boxes import EdgeBoxesParams, edge_boxes, load_edge_model
from sppdet.proposals.importers import load_npz, load_rcnn_mat, save_npz, validate_proposals
from sppdet.proposals.propose import (
    METHODS,
    default_params,
    params_from_dict,
    params_record,
    propose_image,
)
from sppdet.proposals.recall import ImageGroundTruth, RecallReport, evaluate_recall
from sppdet.proposals.selective_search import SelectiveSearchParams, selective_search

__all__ = [
    "METHODS",
    "EdgeBoxesParams",
    "ImageGroundTruth",
    "ProposalError",
    "ProposalResult",
    "RecallReport",
    "SelectiveSearchParams",
    "default_params",
    "edge_boxes",
    "evaluate_recall",
    "load_edge_model",
    "load_npz",
    "load_rcnn_mat",
    "params_from_dict",
    "params_record",
    "propose_image",
    "save_npz",
    "selective_search",
    "validate_proposals",
]
