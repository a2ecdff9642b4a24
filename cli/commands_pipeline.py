"""Commands ``pipeline`` (every stage, make-like) and ``demo``."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.stages.params import DEFAULT_BACKBONE, METRICS, PROPOSAL_METHODS, SCORERS
from sppdet.stages.pipeline_config import DEMO_FIGURES, DEMO_PIPELINE, PipelineConfig
from sppdet.stages.recipes import CPU_EPOCHS, RECIPES

from .context import Settings, pass_settings
from .options import (DeviceType, IntListType, backbone_choice, dataset_argument, device_option,
                      force_option, option)
from .remedies import summary_text

_DEFAULTS = PipelineConfig()


def _echo_stage(result: Any) -> None:
    """Print one finished stage (a :class:`stages.pipeline.StageResult`)."""
    state = "up to date" if result.up_to_date else f"done in {result.seconds:.1f} s"
    click.secho(f"== {result.stage}: {state}", bold=True)
    if result.text and not result.up_to_date:
        click.echo(result.text)


def _config_default(value: object) -> str:
    """The shown default of an option that overrides a config file's key."""
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return f"the config file's, else {shown}"


@click.command("pipeline")
@dataset_argument
@option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
        default=None, help="YAML or JSON file with top-level keys and sections pretrain "
                           "(optional), propose, cache_features, finetune, train_svm, "
                           "train_bbox_reg, detect (docs/pipeline.example.yaml); options "
                           "given here override it.")
@option("--recipe", type=click.Choice(RECIPES), default=None,
        show_default=_config_default(_DEFAULTS.recipe),
        help="Base settings the config file and these options are laid over: paper (5 scales "
             "with flips, 90,000 iterations of a 4,096-wide fc6/fc7: the paper's GPU "
             "schedule), cpu (scale 688 with flips, 1,024 wide at lr 0.01, 3 epochs over the "
             "positive windows), auto (cpu on the CPU, paper on a GPU).")
@option("--plan-only", "--dry-run", "plan_only", is_flag=True, default=False,
        help="Print the plan (each stage's settings and why, expected time, disk) and stop.")
@option("--name", "-n", default=None, show_default=_config_default(_DEFAULTS.name),
        help="Model name.")
@option("--train-split", default=None,
        show_default=_config_default(_DEFAULTS.train_split), help="Training split.")
@option("--test-split", default=None, show_default=_config_default(_DEFAULTS.test_split),
        help="Split to detect and evaluate.")
@option("--backbone", "-b", type=backbone_choice(), default=None,
        show_default=_config_default(DEFAULT_BACKBONE) + " (or the pretrain backbone)",
        help="Conv trunk.")
@option("--scales", type=IntListType("scale", min=1), default=None,
        show_default="the config file's, else the recipe's: paper "
                     + ",".join(map(str, _DEFAULTS.cache_features.scales)) + ", cpu 688",
        help="Shorter image sides, comma-separated.")
@option("--method", type=click.Choice(PROPOSAL_METHODS), default=None,
        show_default=_config_default(_DEFAULTS.propose.method), help="Proposal method.")
@option("--iterations", type=click.IntRange(min=1), default=None,
        show_default=f"the config file's, else the recipe's: paper "
                     f"{_DEFAULTS.finetune.iterations}, cpu {CPU_EPOCHS:g} epochs over the "
                     "positive windows",
        help="Fine-tuning mini-batches (replaces the recipe's epochs).")
@option("--scorer", type=click.Choice(SCORERS), default=None,
        show_default=_config_default(_DEFAULTS.detect.scorer), help="Detection scores.")
@option("--tune/--no-tune", default=None,
        show_default=_config_default(_DEFAULTS.tune.enabled),
        help="Choose each class's NMS and operating point on the validation split before "
             "detecting (the tune step; about a quarter of a BCCD run, and on the test split "
             "it has not beaten the paper's NMS so far: BENCHMARKS.md).")
@option("--metric", type=click.Choice(METRICS), default=None,
        show_default=_config_default(_DEFAULTS.metric), help="AP metric.")
@option("--jobs", "-j", type=click.IntRange(min=1), default=None,
        show_default=_config_default(_DEFAULTS.jobs), help="Worker processes.")
@option("--seed", type=int, default=None, show_default=_config_default(_DEFAULTS.seed),
        help="Seed.")
@option("--dask", default=None, metavar="ADDRESS",
        show_default="the config file's dask key, else no Dask",
        help="Run proposals, SVM mining and detection on Dask: 'local' (a LocalCluster of "
             "--jobs worker processes), a scheduler address (tcp://host:8786) or a scheduler "
             "file. Needs the dask extra (pip install 'sppdet[dask]').")
@option("--device", type=DeviceType(), default=None,
        show_default=_config_default(_DEFAULTS.device),
        help="auto, cpu, cuda or cuda:N (auto takes a GPU when there is one).")
@force_option
@pass_settings
def pipeline_command(settings: Settings, dataset: str, config_file: str | None,
                     name: str | None, train_split: str | None, test_split: str | None,
                     backbone: str | None, scales: tuple[int, ...] | None, method: str | None,
                     iterations: int | None, scorer: str | None, tune: bool | None,
                     metric: str | None, jobs: int | None, seed: int | None, dask: str | None,
                     device: str | None, recipe: str | None, plan_only: bool,
                     force: bool) -> None:
    """Run every stage on DATASET: propose, cache-features, finetune, train-svm,
    train-bbox-reg, detect, eval; first pretrain when the config has a pretrain section
    (its weights then compute the features).

    First prints the plan: each stage's settings and why (recipe, config file, option), its
    expected time and the disk it needs; stops before any stage when the disk cannot hold it.
    Stages whose artifacts are up to date (same parameters, same inputs) are skipped; after a
    change, the pipeline reruns from the first stage it affects.
    """
    from sppdet.stages import pipeline, planning
    from sppdet.stages.pipeline_config import (check_config, read_config_values,
                                               resolve_config)
    from sppdet.stages.plan import check_disk

    layers = [(str(config_file), read_config_values(config_file))] if config_file else []
    layers += _option_layers(name=name, train_split=train_split, test_split=test_split,
                             backbone=backbone, scales=scales, method=method,
                             iterations=iterations, scorer=scorer, tune=tune, metric=metric,
                             jobs=jobs, seed=seed, device=device, dask=dask, recipe=recipe)
    resolved = resolve_config(layers, _device_type)
    if plan_only:
        check_config(resolved.config)
        plan, _ = planning.make_plan(dataset, settings.work_dir, resolved, force=force,
                                     device_type=_device_type(resolved.config.device))
        click.echo(plan.to_text())
        check_disk(plan)
        return
    summary = pipeline.run(dataset, settings.work_dir, resolved, force=force,
                           on_stage=_echo_stage, on_plan=lambda p: click.echo(p.to_text()))
    click.echo(summary_text(summary))


def _device_type(name: str) -> str:
    """``cpu`` or ``cuda``: the device ``name`` (``auto``...) resolves to here."""
    from sppdet.devices import resolve_device

    return resolve_device(name).type


#: Options that set a key of a config section: option -> (section, key); the others are
#: top-level keys of their own name.
_CONFIG_KEY = {"backbone": ("cache_features", "backbone"),
               "scales": ("cache_features", "scales"), "method": ("propose", "method"),
               "iterations": ("finetune", "iterations"), "scorer": ("detect", "scorer"),
               "tune": ("tune", "enabled")}


def _option_layers(**options: Any) -> list[tuple[str, dict[str, Any]]]:
    """One config layer per option given (not None), labelled with its flag."""
    layers = []
    for key, value in options.items():
        if value is None:
            continue
        # a boolean flag given as --no-X is labelled so in the plan's "why"
        label = ("--no-" if value is False else "--") + key.replace("_", "-")
        if key in _CONFIG_KEY:
            section, field = _CONFIG_KEY[key]
            layers.append((label, {section: {field: value}}))
        else:
            layers.append((label, {key: value}))
    return layers


@click.command("demo")
@option("--n-trainval", type=click.IntRange(min=4), default=DemoDataConfig().n_trainval,
        show_default=True, help="Synthetic trainval images.")
@option("--n-test", type=click.IntRange(min=1), default=DemoDataConfig().n_test,
        show_default=True, help="Synthetic test images.")
@option("--iterations", type=click.IntRange(min=1),
        default=DEMO_PIPELINE.finetune.iterations, show_default=True,
        help="Fine-tuning mini-batches.")
@option("--figures", type=click.IntRange(min=0), default=DEMO_FIGURES, show_default=True,
        help="Test images to draw the detections on.")
@option("--jobs", "-j", type=click.IntRange(min=1), default=DEMO_PIPELINE.jobs,
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
    from sppdet.stages import demo

    data_config = DemoDataConfig(n_trainval=n_trainval, n_test=n_test)
    config = dataclasses.replace(DEMO_PIPELINE, jobs=jobs, device=device)
    config.finetune = dataclasses.replace(config.finetune, iterations=iterations)
    summary = demo.run(settings.work_dir, data_config=data_config, config=config,
                       figures=figures, force=force, on_stage=_echo_stage)
    click.echo(summary_text(summary))


COMMANDS = [pipeline_command, demo_command]
