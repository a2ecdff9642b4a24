"""Per-class linear SVMs with hard-negative mining (R-CNN's recipe, reused by SPP-net).

What this package implements (REFERENCE.md section 6; R-CNN ``rcnn_train.m`` and SPP-net
``spp_train.m``):

- **Feature scale**: one factor for all features so that their mean L2 norm is 20, estimated on
  a fixed random sample (R-CNN ``rcnn_feature_stats.m``: 200 random images x up to 200 random
  boxes): :mod:`.scale`.
- **Solver**: L2-regularised hinge loss solved in the dual (liblinear type 3), ``C = 1e-3``, a
  constant bias feature of 10 whose weight is regularised like every other weight, loss weight 2
  on positives: :mod:`.solver` (scikit-learn's liblinear-backed ``LinearSVC``).
- **Hard-negative mining**: :mod:`.estimator` and :mod:`.miner`, one estimator per class,
  streaming the negatives image by image so that only the cache and one image's features are
  in memory.
- **Per-class training in parallel**: :mod:`.per_class` (joblib over a module-level
  worker, as scikit-learn's ``multiclass.py`` does) and :mod:`.shared` (one stream of images
  for several classes).

Features passed to ``fit`` and ``decision_function`` are the raw (unscaled) features; the scale
factor is given to ``fit`` and stored with the model (``feature_scale_``), so a model is never
applied to features on another scale.

Modules:

- :mod:`~sppdet.training.svm.scale`: the feature scale (mean L2 norm 20).
- :mod:`~sppdet.training.svm.window_selection`: which windows of an image are negatives worth
  keeping (feature-map duplicates, overlapping negatives).
- :mod:`~sppdet.training.svm.solver`: liblinear's solver and the objective it minimises.
- :mod:`~sppdet.training.svm.inputs`: the negatives a trainer consumes, and their validation.
- :mod:`~sppdet.training.svm.negative_cache`: the cached negatives of one class.
- :mod:`~sppdet.training.svm.miner`: the mining state of one class, fed image by image.
- :mod:`~sppdet.training.svm.estimator`: :class:`HardNegativeSVM`, one class's estimator.
- :mod:`~sppdet.training.svm.per_class`: every class, each on its own stream, in parallel.
- :mod:`~sppdet.training.svm.shared`: every class of a worker on one shared stream.
- :mod:`~sppdet.training.svm.weights`: the trained SVMs as the ``svm.npz`` file.

Nothing is re-exported here, so that a caller that only reads ``svm.npz`` imports numpy alone
(not scikit-learn, joblib or torch).
"""
