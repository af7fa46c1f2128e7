"""`embedtab status`: the manifest as a table, or as JSON."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from embedtab.cli.common import DEFAULT_ARTIFACTS, ArtifactsOpt, emit_json, open_artifacts, stdout


def status(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full manifest plus health as JSON.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Also re-hash every file (slower).")] = False,
) -> None:
    """Show every artifact: kind, name, rows, health (ok / stale / damaged), fingerprint.

    Exits 1 when an artifact is damaged (files missing, or with --verify changed), naming the files.

    [bold]Examples[/bold]

      embedtab status -A artifacts

      embedtab status --json | jq '.artifacts[] | {kind, name, fingerprint}'
    """
    report = open_artifacts(artifacts).status(verify=verify)
    if as_json:
        emit_json(report)
        _exit_if_damaged(report)
        return
    if not report["artifacts"]:
        stdout.print(f"{report['root']}: no artifacts yet", markup=False)
        return
    table = Table(title=f"embedtab artifacts in {report['root']}", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("rows", justify="right")
    table.add_column("health")
    table.add_column("finished (UTC)", no_wrap=True)
    table.add_column("fingerprint", no_wrap=True)
    for art in report["artifacts"]:
        health = art["health"]
        style = "green" if health == "ok" else "yellow" if health.startswith(("stale", "pending")) else "red"
        table.add_row(
            art["kind"], art["name"], f"{art['rows']:,}" if art["rows"] is not None else "",
            f"[{style}]{health}[/{style}]", art["finished_at"][:16].replace("T", " "), art["fingerprint"][:10],
        )
    # Piped into a file or another program, nothing is cut to an 80-column guess.
    stdout.print(table, width=None if stdout.is_terminal else 400)
    for pending in report["pending"]:
        stdout.print(f"[yellow]interrupted publication pending:[/yellow] {pending} (the next writer finishes it)")
    if report["reclaimable_bytes"]:
        stdout.print(f"{report['reclaimable_bytes'] / 2**20:,.1f} MiB left in .staging by interrupted runs "
                     "(removed by the next command that writes here)", markup=False)
    _exit_if_damaged(report)


def _exit_if_damaged(report: dict) -> None:
    if report["damaged"]:
        from embedtab.errors import IntegrityError

        names = [f"{a['kind']}/{a['name']} ({'; '.join(a['reasons'][:3])})" for a in report["artifacts"] if a["health"].startswith("damaged")]
        raise IntegrityError(f"{report['damaged']} damaged: {' | '.join(names)}")
