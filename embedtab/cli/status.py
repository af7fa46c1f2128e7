"""`embedtab status`: the manifest as a table, or as JSON."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from embedtab.cli.common import DEFAULT_ARTIFACTS, ArtifactsOpt, emit_json, open_store, stdout


def status(
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full manifest plus health as JSON.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Also re-hash every file (slower).")] = False,
) -> None:
    """Show every artifact: kind, name, rows, health (ok / stale / missing files), fingerprint.

    [bold]Examples[/bold]

      embedtab status -A artifacts

      embedtab status --json | jq '.artifacts[] | {kind, name, fingerprint}'
    """
    from embedtab.status import collect

    report = collect(open_store(artifacts), verify=verify)
    if as_json:
        emit_json(report)
        return
    if not report["artifacts"]:
        stdout.print(f"{report['root']}: no artifacts yet", markup=False)
        return
    table = Table(title=f"embedtab artifacts in {report['root']}", title_justify="left")
    table.add_column("kind")
    table.add_column("name", no_wrap=True)
    table.add_column("rows", justify="right")
    table.add_column("health")
    table.add_column("finished (UTC)", no_wrap=True)
    table.add_column("fingerprint", no_wrap=True)
    for art in report["artifacts"]:
        health = art["health"]
        style = "green" if health == "ok" else "yellow" if health.startswith("stale") else "red"
        table.add_row(
            art["kind"], art["name"], f"{art['rows']:,}" if art["rows"] is not None else "",
            f"[{style}]{health}[/{style}]", art["finished_at"][:16].replace("T", " "), art["fingerprint"][:10],
        )
    stdout.print(table)
    for pending in report["pending"]:
        stdout.print(f"[yellow]interrupted publication pending:[/yellow] {pending} (the next writer finishes it)")
