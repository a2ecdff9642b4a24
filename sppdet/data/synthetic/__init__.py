"""A synthetic PASCAL-VOC-layout detection dataset, deterministic by seed.

``make_demo_data(out_dir, DemoDataConfig(...))`` writes a small dataset in the VOC2007 layout
(``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) on which the whole pipeline can run
without a download: the demo and the end-to-end tests use it.

What an image holds:

* a cluttered background: a colour gradient, low- and mid-frequency colour noise, and clutter
  that is *not* an object (irregular blobs, some semi-transparent; straight lines; curved
  scribbles);
* 1 to 6 objects (by default) of up to 8 shape classes that differ by outline *and* texture
  (:data:`SHAPE_CLASSES`): a disc with radial sectors, a square with a checkerboard, a triangle
  with stripes, a two-band ring (annulus), a plus-shaped cross with a contrasting centre, a star
  with a radial gradient, an ellipse with dots and a hexagon with a grid of lines. Both colours
  of an object are drawn at random per instance (only kept apart from each other and from the
  background under the object), so colour alone never tells the classes apart;
* random sizes (longer side about 20 to 300 pixels, log-uniform, plus a few tiny ones), aspect
  ratios and rotations; objects overlap (later objects occlude earlier ones) and some are cut by
  the image border.

Annotations are computed from the objects' rendered pixel masks after occlusion: the box is the
extent of the *visible* pixels (the VOC guideline: "the bounding box of the visible area of the
object"), written as 1-based inclusive integer pixels. ``truncated`` is 1 when part of the
object's shape lies outside the image. ``difficult`` is 1 when the visible box is tiny
(``sqrt(w * h) < difficult_min_size``) or when less than ``difficult_min_visible`` of the
object's whole shape is visible (heavily occluded or mostly outside the image).

Determinism: image ``i`` (0-based, id ``f"{i + 1:06d}"``) is drawn from its own generator
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(0, i)))``, and the split assignment
from ``SeedSequence(seed, spawn_key=(1,))``, so images can be made in any order or in parallel
and the same seed gives byte-identical annotation and image-set files (and byte-identical JPEGs
with the same OpenCV build).

Modules:

- :mod:`~sppdet.data.synthetic.config`: :class:`DemoDataConfig` and the shape classes.
- :mod:`~sppdet.data.synthetic.splits`: image ids and the split assignment.
- :mod:`~sppdet.data.synthetic.shapes`: outlines, textures and anti-aliased fills of shapes.
- :mod:`~sppdet.data.synthetic.background`: the cluttered background.
- :mod:`~sppdet.data.synthetic.scene`: placing objects in an image and annotating them
  (:func:`render_demo_image`).
- :mod:`~sppdet.data.synthetic.dataset`: writing the dataset (:func:`make_demo_data`) and
  recognising one.

Nothing is re-exported here, so that reading the config does not import OpenCV.
"""
