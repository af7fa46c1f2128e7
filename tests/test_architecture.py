"""The import graph of `embedtab` (built by grimp, imports inside functions and under TYPE_CHECKING
included): no import circles, and no import that runs back up the layers.

The layers, from the real graph (high imports low; skipping a layer is fine, importing up is not):

    embedtab.cli          typer commands; the only modules that import typer or rich
    embedtab.api          the Python API the CLI runs on (its `run` drives the pipeline)
    embedtab.pipeline     `embedtab run`: the stages in order, from a pipeline file
    embedtab.stages       the stage registry: each command's options class, main argument, runner, edges
    lookup | export       read fitted workflows (embedtab.workflow), so they sit above them
    encode | reduce | workflow | status | summaries | lookup_options
                          the stages (and lookup's options), and the read-only views of the
                          artifacts; none imports another
    embedtab.artifacts    the directory layout, manifest, locks and publishing
    bounds, device, fingerprint, options, reporting, synthetic, tables, yamlfile
                          the shared core (these may import each other, in one direction)
    errors | version      the leaves; they import nothing of embedtab

The package root (`import embedtab; embedtab.Artifacts(...)`) is the users' door to embedtab.api,
so nothing inside the package imports it: `__version__` comes from embedtab.version.
"""

from __future__ import annotations

import grimp
import pytest
from grimp import Layer

LAYERS = [
    "embedtab.cli",
    "embedtab.api",
    "embedtab.pipeline",
    "embedtab.stages",
    Layer("embedtab.lookup", "embedtab.export", independent=True),
    Layer(
        "embedtab.encode",
        "embedtab.reduce",
        "embedtab.workflow",
        "embedtab.status",
        "embedtab.summaries",
        "embedtab.lookup_options",
        independent=True,
    ),
    "embedtab.artifacts",
    Layer(
        "embedtab.bounds",
        "embedtab.device",
        "embedtab.fingerprint",
        "embedtab.options",
        "embedtab.reporting",
        "embedtab.synthetic",
        "embedtab.tables",
        "embedtab.yamlfile",
        independent=False,
    ),
    Layer("embedtab.errors", "embedtab.version", independent=True),
]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("embedtab", include_external_packages=True, cache_dir=None)


def test_no_import_circles(graph):
    """For every import a -> b inside embedtab, no chain of imports leads from b back to a."""
    circles: dict[frozenset[str], list[str]] = {}
    for importer in sorted(m for m in graph.modules if m.split(".")[0] == "embedtab"):
        for imported in graph.find_modules_directly_imported_by(importer):
            if imported.split(".")[0] == "embedtab" and graph.chain_exists(importer=imported, imported=importer):
                circle = [importer, *graph.find_shortest_chain(importer=imported, imported=importer)]
                circles.setdefault(frozenset(circle), circle)
    assert not circles, "import circles:\n" + "\n".join(sorted(" -> ".join(c) for c in circles.values()))


def test_no_import_runs_back_up(graph):
    placed = {name for layer in LAYERS for name in ([layer] if isinstance(layer, str) else layer.module_tails)}
    assert graph.find_children("embedtab") <= placed, "place new modules in LAYERS"
    illegal = [
        " -> ".join([" | ".join(sorted(route.heads)), *route.middle, " | ".join(sorted(route.tails))])
        for dependency in graph.find_illegal_dependencies_for_layers(LAYERS)
        for route in dependency.routes
    ]
    assert not illegal, "imports that run back up the layers:\n" + "\n".join(sorted(illegal))
    importers = sorted(graph.find_modules_that_directly_import("embedtab"))
    assert not importers, f"{importers} import the package root, which leads to embedtab.api: import from the module itself"


def test_only_the_cli_imports_typer_or_rich(graph):
    for library in ("typer", "rich"):
        if library in graph.modules:
            outside = {m for m in graph.find_modules_that_directly_import(library) if not f"{m}.".startswith("embedtab.cli.")}
            assert not outside, f"{library} imported outside embedtab.cli by {sorted(outside)}"
