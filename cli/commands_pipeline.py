"""Commands ``pipeline`` (every stage, make-like) and ``demo``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.stages import demo, pipeline
from sppdet.stages.pipeline import StageResult

from .commands_features import parse_scales
from .context import Settings, pass_settings
from .options import dataset_argument, device_option, force_option


def _echo_stage(result: StageResult) -> None:
    state = "up to date" if result.up_to_date else f"done in {result.seconds:.1f} s"
    click.secho(f"== {result.stage}: {state}", bold=True)
    if result.text and not result.up_to_date:
        click.echo(result.text)


@click.command("pipeline")
@dataset_argument
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="YAML or JSON file with sections pretrain (optional), "
                                 "propose, cache_features, finetune, train_svm, "
                                 "train_bbox_reg, detect (options given here override it).")
@click.option("--name", "-n", default=None, help="Model name.  [default: spp]")
@click.option("--train-split", default=None, help="Training split.  [default: trainval]")
@click.option("--test-split", default=None, help="Split to detect and evaluate.  "
                                                 "[default: test]")
@click.option("--backbone", "-b", default=None,
              help="Conv trunk.  [default: efficientnet_lite0, or the config's "
                   "pretrain backbone]")
@click.option("--scales", default=None,
              help="Shorter image sides, comma-separated.  [default: 480,576,688,864,1200]")
@click.option("--method", default=None, help="Proposal method.  [default: ss-fast]")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Fine-tuning mini-batches.  [default: 90000]")
@click.option("--scorer", type=click.Choice(["svm", "softmax"]), default=None,
              help="Detection scores.  [default: svm]")
@click.option("--metric", type=click.Choice(["11point", "area"]), default=None,
              help="AP metric.  [default: 11point (VOC2007)]")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes.  [default: 1]")
@click.option("--seed", type=int, default=None, help="Seed.  [default: 0]")
@device_option
@force_option
@pass_settings
def pipeline_command(settings: Settings, dataset: str, config_file: str | None,
                     name: str | None, train_split: str | None, test_split: str | None,
                     backbone: str | None, scales: str | None, method: str | None,
                     iterations: int | None, scorer: str | None, metric: str | None,
                     jobs: int | None, seed: int | None, device: str, force: bool) -> None:
    """Run every stage on DATASET: propose, cache-features, finetune, train-svm,
    train-bbox-reg, detect, eval; first pretrain when the config has a pretrain section
    (its weights then compute the features).

    Stages whose artifacts are up to date (same parameters, same inputs) are skipped; after a
    change, the pipeline reruns from the first stage it affects.
    """
    config = pipeline.load_config(config_file) if config_file else pipeline.PipelineConfig()
    config = _override(config, name=name, train_split=train_split, test_split=test_split,
                       backbone=backbone, scales=scales, method=method, iterations=iterations,
                       scorer=scorer, metric=metric, jobs=jobs, seed=seed, device=device)
    summary = pipeline.run(dataset, settings.work_dir, config, force=force,
                           on_stage=_echo_stage)
    click.echo(summary.to_text())


def _override(config: pipeline.PipelineConfig, **options: object) -> pipeline.PipelineConfig:
    top = {k: v for k, v in options.items()
           if k in ("name", "train_split", "test_split", "metric", "jobs", "seed", "device")
           and v is not None}
    config = dataclasses.replace(config, **top)
    if options.get("backbone") or options.get("scales"):
        changes = {}
        if options.get("backbone"):
            changes["backbone"] = options["backbone"]
        if options.get("scales"):
            changes["scales"] = parse_scales(str(options["scales"]))
        config.cache_features = dataclasses.replace(config.cache_features, **changes)
    if options.get("method"):
        config.propose = dataclasses.replace(config.propose, method=options["method"])
    if options.get("iterations"):
        config.finetune = dataclasses.replace(config.finetune, iterations=options["iterations"])
    if options.get("scorer"):
        config.detect = dataclasses.replace(config.detect, scorer=options["scorer"])
    return config


@click.command("demo")
@click.option("--n-trainval", type=click.IntRange(min=4), default=DemoDataConfig().n_trainval,
              show_default=True, help="Synthetic trainval images.")
@click.option("--n-test", type=click.IntRange(min=1), default=DemoDataConfig().n_test,
              show_default=True, help="Synthetic test images.")
@click.option("--iterations", type=click.IntRange(min=1),
              default=demo.DEMO_PIPELINE.finetune.iterations, show_default=True,
              help="Fine-tuning mini-batches.")
@click.option("--figures", type=click.IntRange(min=0), default=6, show_default=True,
              help="Test images to draw the detections on.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=demo.DEMO_PIPELINE.jobs,
              show_default=True, help="Worker processes.")
@device_option
@force_option
@pass_settings
def demo_command(settings: Settings, n_trainval: int, n_test: int, iterations: int,
                 figures: int, jobs: int, device: str, force: bool) -> None:
    """Make the synthetic dataset and run the whole pipeline on it, offline.

    Everything lands in --work-dir: the dataset (demo-data/), every artifact, the mAP report
    with precision-recall curves (eval/) and test images with their detections drawn
    (demo-figures/).
    """
    data_config = DemoDataConfig(n_trainval=n_trainval, n_test=n_test)
    config = dataclasses.replace(demo.DEMO_PIPELINE, jobs=jobs, device=device)
    config.finetune = dataclasses.replace(config.finetune, iterations=iterations)
    summary = demo.run(settings.work_dir, data_config=data_config, config=config,
                       figures=figures, force=force, on_stage=_echo_stage)
    click.echo(summary.to_text())


COMMANDS = [pipeline_command, demo_command]
