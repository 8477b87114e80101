"""The `fairsynth` command line: one entry point, one sub-command per stage.

Every command that takes a recipe also takes dotted overrides after it::

    fairsynth prepare --config recipes/fairskin_derm.yaml prepare.resolution=[256] prepare.drop_invalid=true

One module per command or command group, each registering on the shared :data:`~.common.app`:

==============  ============================================================================
common          the app, the consoles, ``_fail``, ``_load_recipe``, ``print_problems``,
                the study lock (``_hold_study``, ``EXIT_LOCKED``)
registries      ``ls``
validate        ``validate``
prepare         ``prepare`` (and ``_run_prepare``, the study's prepare stage)
train           ``train`` (and ``_run_train``)
evaluate        ``evaluate`` (and ``_run_evaluate``, ``print_results``)
generate        ``generate`` (and ``_guarded``, ``_print_delivery``, shared with ``filter``)
filter          ``filter``
weights         ``weights list|fetch``
downstream      ``downstream compare|train|curve|ablate`` (and ``_run_downstream``, ``_run_curve``,
                ``_run_ablate``)
run             ``run`` (and ``_run_study``)
sweep           ``sweep``
stages          ``STAGE_RUNNERS``: what each stage of ``fairsynth run`` does
review          ``review export|import``
report          ``report``
demo            ``demo``
==============  ============================================================================
"""

from __future__ import annotations

# Commands register when their module is imported; this order is the order of `fairsynth --help`.
from fairsynth.cli import registries, validate, prepare, train, evaluate, generate, filter  # noqa: F401,E401
from fairsynth.cli import weights, downstream, run, sweep, review, report, demo  # noqa: F401,E401
from fairsynth.cli.common import EXIT_LOCKED, app, errors


def main(argv: list[str] | None = None) -> None:
    """Console entry point; a full disk, whatever command it stops, is one message and exit 3."""
    from rich.markup import escape as rich_escape

    from fairsynth.io import DISK_FULL, disk_full_message

    try:
        app(args=argv, prog_name="fairsynth")
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        errors.print(f"[bold red]error:[/] {rich_escape(disk_full_message(err))}")
        raise SystemExit(3) from None


__all__ = ["EXIT_LOCKED", "app", "main"]
