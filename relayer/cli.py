"""The ``passerelle`` command line.

Conventions for every command: ``--json`` on every read command (one JSON object per line),
errors are one line on stderr prefixed ``passerelle:``, the full traceback only under ``-v``,
exit 0 on success, 1 when the answer is "no" (an invalid proof), 2 on unusable input.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from relayer import proof_files

INSPECT_LABEL_WIDTH = 36
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in Passerelle, not in the user's input


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="passerelle", prog_name="passerelle")
def cli(verbose: bool) -> None:
    """Passerelle: a cross-chain relay and bridge with light-client verification."""


@cli.group()
def proof() -> None:
    """Check proofs offline: Merkle, committee, message, Ethereum and Substrate."""


@proof.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, per line.")
def proof_verify(files: Sequence[Path], as_json: bool) -> int:
    """Verify proof FILES; exit 0 all valid, 1 some invalid, 2 some unusable."""
    reports = [proof_files.check_file(path) for path in files]
    for report in reports:
        if as_json:
            click.echo(json.dumps(report.as_json(), sort_keys=False))
        else:
            click.echo(f"{report.file}: {report.reason}")
    return proof_files.exit_code(reports)


@proof.command("inspect")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--json", "as_json", is_flag=True, help="Claims, steps and verdict as one JSON object."
)
def proof_inspect(file: Path, as_json: bool) -> int:
    """Show what the proof FILE claims and each step of its check."""
    report = proof_files.check_file(file)
    if as_json:
        payload = report.as_json() | {"claims": report.claims, "steps": report.steps}
        click.echo(json.dumps(payload))
    else:
        _print_inspection(report)
    return proof_files.exit_code([report])


def _print_inspection(report: proof_files.Report) -> None:
    click.echo(f"file:  {report.file}")
    click.echo(f"kind:  {report.kind or '?'}")
    for title, rows in (("claims", report.claims), ("checks", report.steps)):
        if rows:
            click.echo(f"{title}:")
            width = min(INSPECT_LABEL_WIDTH, max(len(label) for label, _ in rows))
            for label, value in rows:
                if len(label) > width:  # long labels get their own line rather than a wide table
                    click.echo(f"  {label}")
                click.echo(f"  {('' if len(label) > width else label).ljust(width)}  {value}")
    verdict = click.style(report.reason, fg="green" if report.valid else "red", bold=True)
    click.echo(f"verdict: {verdict}")


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI and turn every failure into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in args)
    try:
        code = cli.main(args=args, prog_name="passerelle", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        click.echo(f"passerelle: {exc.format_message()}", err=True)
        code = exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("passerelle: interrupted", err=True)
        code = 130
    except Exception as exc:  # a bug: one line, the trace only when asked for
        if verbose:
            traceback.print_exc()
        click.echo(f"passerelle: internal error: {exc.__class__.__name__}: {exc}", err=True)
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
