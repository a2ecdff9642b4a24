"""Fine-tuning fc6, fc7 and a new (K+1)-way fc8 on cached SPP features (paper 4.1).

The conv layers are frozen, so training reads pooled conv5 features from the feature cache
(:class:`~sppdet.features.cache.FeatureCache`) and trains only
:class:`~sppdet.features.fc_head.FcHead`. Settings follow the released code
(REFERENCE section 5): mini-batches of 128 windows with 25 % positives drawn across many images,
a random cached scale per window, mirrored images, SGD with momentum 0.9 and weight decay 5e-4,
dropout 0.5, and the learning rate 1e-3, 1e-4, 1e-5 for equal thirds of the iterations (the
released code runs 3 x 30k; the paper gives 1e-4 for 250k then 1e-5 for 50k). As in the released
Caffe nets, biases learn at twice the rate and have no weight decay. Unlike the released code,
the checkpoint is chosen on a held-out validation split, never on test windows.

The paper fine-tunes fc6 and fc7 starting from the pretrained network. sppdet does that with
``init="pretrained"``: fc6/fc7 are copied from the weights file the training features were
cached with (a paper trunk saved with its fc layers, e.g. by ``sppdet pretrain``;
:mod:`sppdet.features.pretrained_fc`), and features are used as cached. Without such a file (the
default EfficientNet-Lite0 trunk has no fc layers of these shapes) fc6 and fc7 start random,
with two departures: He initialisation instead of Gaussian std 0.005, and pooled features scaled
by one factor (estimated on training windows, folded into fc6 when saving) so their values have
an RMS of 1. All are options of :class:`FinetuneConfig`.

**Sampling** (:class:`ChunkSampler`). Pooling windows from the cache is the cost of an
iteration on a CPU (an image's maps at every scale are decoded before any window is pooled),
so mini-batches are planned a *chunk* of iterations at a time: a chunk takes
``images_per_chunk`` images (consecutive images of a fresh random permutation of the split per
pass, so every image is visited once per pass), decides once per image whether it is mirrored
(50 %), and then draws each of its mini-batches uniformly from the windows of those images:
``round(fg_fraction * batch_size)`` positives without replacement, the rest negatives (with
replacement only when the chunk has too few). Each window gets a uniformly random cached scale.
All features of the chunk are pooled image by image (each image's maps decoded once) into one
buffer on the training device. Every random choice of chunk ``k`` comes from a generator seeded
with ``(seed, k)``, so the plan of an iteration never depends on how a run was interrupted;
the released code's window data layer instead draws every window uniformly from the whole
split, which would decode about one image per window.

**Resuming.** A checkpoint (every ``checkpoint_every`` iterations) holds the weights, the
optimizer's momentum, the iteration, the sampler state (its seed and next iteration: the plan
of every later chunk is a function of them), the torch RNG state (dropout masks), the best
validation result and the loss history; a resumed run equals an uninterrupted one.

Modules:

- :mod:`~sppdet.training.finetune.config`: :class:`FinetuneConfig` and the learning-rate schedule.
- :mod:`~sppdet.training.finetune.sampling`: the chunk sampler and the pooling of a plan.
- :mod:`~sppdet.training.finetune.validation`: the fixed validation sample and its metrics.
- :mod:`~sppdet.training.finetune.compatibility`: what an fc model records of its features,
  and the refusal of other features.
- :mod:`~sppdet.training.finetune.head_init`: the initialisation of fc6-fc8 and the input scale.
- :mod:`~sppdet.training.finetune.trainer`: :class:`FcFinetuner`, the training loop and its
  checkpoints.
- :mod:`~sppdet.training.finetune.plot`: the training curve.

Nothing is re-exported here, so that reading the config does not import the trainer.
"""
