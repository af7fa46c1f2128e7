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
    """Show every artifact: kind, name, rows, health (ok / stale / damaged / unrecorded), fingerprint.

    Exits 1 when an artifact is damaged (files missing, or with --verify changed), naming the files,
    or when an artifact folder is unrecorded (on disk, not in manifest.json: a lost manifest, a
    folder copied in by hand), naming the folders; no command reads or replaces those without --force.

    [bold]Examples[/bold]

      embedtab status -A artifacts

      embedtab status --json | jq '.artifacts[] | {kind, name, fingerprint}'
    """
    report = open_artifacts(artifacts).status(verify=verify)
    if as_json:
        emit_json(report)
        _exit_if_damaged(report)
        return
    if not report["artifacts"] and not report["unrecorded"]:
        stdout.print(f"{report['root']}: no artifacts yet", markup=False)
        _print_work(report)
        return
    stdout.print(_table(report))  # (off a terminal the console is wide: nothing is cut)
    _footer(report)
    _exit_if_damaged(report)


def _table(report: dict) -> Table:
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
            art["kind"],
            art["name"],
            f"{art['rows']:,}" if art["rows"] is not None else "",
            f"[{style}]{health}[/{style}]",
            art["finished_at"][:16].replace("T", " "),
            art["fingerprint"][:10],
        )
    for art in report["unrecorded"]:
        table.add_row(art["kind"], art["name"], "", "[red]unrecorded[/red]", "", "")
    return table


def _footer(report: dict) -> None:
    """What the table does not show: unrecorded folders, unfinished work, interrupted publications, debris."""
    from embedtab.artifacts import MANIFEST, STAGING

    if report["unrecorded"]:
        where = f"there is no {MANIFEST}" if not report["manifest"] else f"{MANIFEST} has no record of them"
        stdout.print(
            f"{len(report['unrecorded'])} unrecorded folder(s): {where} (a lost or older manifest, or folders "
            "copied in by hand), so nothing tells what made them; no command reads or replaces them: rerun the "
            "command that makes one with --force to rebuild it, or move it away",
            markup=False,
        )
    _print_work(report)
    _print_id_spaces(report)
    for export in report["exports"]:
        for number, models in sorted(export["versions"].items(), key=lambda kv: -int(kv[0])):
            served = ", ".join(f"{m} = {s['artifact']} {s['fingerprint'][:10]}" for m, s in models.items())
            stdout.print(f"exports/{export['name']} version {number}: {served}", markup=False)
    for pending in report["pending"]:
        stdout.print(f"[yellow]interrupted publication pending:[/yellow] {pending} (the next writer finishes it)")
    if report["reclaimable_bytes"]:
        stdout.print(
            f"{report['reclaimable_bytes'] / 2**20:,.1f} MiB left in {STAGING} by interrupted runs "
            "(removed by the next command that writes here)",
            markup=False,
        )


def _print_id_spaces(report: dict) -> None:
    by_workflow: dict[str, list[str]] = {}
    for space in report["id_spaces"]:
        moved = f", {space['moved']:,} moved by --force" if space.get("moved") else ""
        by_workflow.setdefault(space["workflow"], []).append(f"{space['column']} {space['ids']:,} (+{space['added']:,}{moved})")
    for workflow, spaces in by_workflow.items():
        stdout.print(f"id spaces of workflows/{workflow} (ids, +added by its last fit): {', '.join(spaces)}", markup=False)


def _print_work(report: dict) -> None:
    for work in report["work"]:
        stdout.print(
            f"unfinished encode work: {work['path']} ({len(work['keys'])} run(s)); rerunning the same encode command resumes it",
            markup=False,
        )


def _exit_if_damaged(report: dict) -> None:
    from embedtab.artifacts import MANIFEST
    from embedtab.errors import IntegrityError

    problems = []
    if report["damaged"]:
        names = [
            f"{a['kind']}/{a['name']} ({'; '.join(a['reasons'][:3])})" for a in report["artifacts"] if a["health"].startswith("damaged")
        ]
        problems.append(f"{report['damaged']} damaged: {' | '.join(names)}")
    if report["unrecorded"]:
        names = [f"{a['kind']}/{a['name']}" for a in report["unrecorded"]]
        shown = ", ".join(names[:10]) + (f" (+{len(names) - 10} more)" if len(names) > 10 else "")
        problems.append(f"{len(names)} unrecorded (on disk, not in {MANIFEST}; rebuild with --force or move away): {shown}")
    if problems:
        raise IntegrityError("; ".join(problems))
