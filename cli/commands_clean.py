"""Command ``clean``: delete what killed runs left in a work dir."""

from __future__ import annotations

from pathlib import Path

import click

from .context import Settings, pass_settings


@click.command("clean")
@click.option("--unfinished/--no-unfinished", default=False, show_default=True,
              help="Also delete unfinished per-image runs (X.parts/ folders that a rerun of "
                   "their command would resume); their computed images are lost.")
@click.option("--dry-run/--no-dry-run", default=False, show_default=True,
              help="Only list what would be deleted.")
@pass_settings
def clean_command(settings: Settings, unfinished: bool, dry_run: bool) -> None:
    """Delete what killed runs left in the work dir.

    That is temporaries (.X.<random>.tmp, from a kill while X was written) and X.parts/
    folders already merged into X. Each stage also cleans its own output's leftovers when it
    runs again; this covers the outputs no stage will run for again. Outputs that a running
    sppdet command is writing are left alone.
    """
    from sppdet.io.cleanup import clean

    work: Path = settings.work_dir
    if not work.is_dir():
        raise click.ClickException(f"{work}: no such work dir")
    deleted, skipped = clean(work, unfinished=unfinished, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for item in deleted:
        click.echo(f"{verb} {item.kind}: {item.path} ({item.bytes / 1e6:.1f} MB)")
    total = sum(item.bytes for item in deleted)
    click.echo(f"{len(deleted)} leftover(s) {verb}, {total / 1e6:.1f} MB, under {work}")
    kept = [item for item in skipped if item.kind == "unfinished parts"]
    if kept and not unfinished:
        click.echo(f"kept {len(kept)} unfinished run(s) (rerun their command to resume, or "
                   "--unfinished to delete them): " + ", ".join(str(i.path) for i in kept[:5]))
    busy = [item for item in skipped if item.kind != "unfinished parts"]
    if busy:
        click.echo(f"left {len(busy)} file(s) of outputs being written now (or written "
                   "within the hour)")


COMMANDS = [clean_command]
