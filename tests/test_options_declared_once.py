"""Every option is declared once -- a field of its command's options class (embedtab.options) -- and
the three ways in (the CLI, the Python API, pipeline files) agree with that declaration.

Pipeline files and the Python API are derived from the declarations (embedtab.stages): an option
added to an options class is accepted by both with no other edit. The CLI stays written by hand:
typer builds a command from a function signature, and a good command line needs what a dataclass
field does not say -- short flags (`-c`, `-m`), `--normalize/--no-normalize` pairs, arguments
versus options, environment variables, a flag spelled otherwise (`--apply` fills `projection`),
help panels and the examples in each docstring -- and a signature generated at import time would
hide all of that from readers, type checkers and `--help`. It takes every default and help text
from the declarations (`default_of`, `help_of`), and the tests here fail when a declared option
has no flag, a flag has no declaration, or a default, a help text or a required option differs.

`--limit N` (encode only the first N rows) shows the cost of a new option: its field in
embedtab/encode/options.py, one line in each encode command's signature, and the reading of the
rows (embedtab/encode/sources.py); the tests below find it in the pipeline file and the API
without any other edit.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
import pytest
import typer.main

from embedtab.options import declared, default_of, has_default, help_of, meta
from embedtab.stages import COMMANDS

# A value for each option that has no default (what a test must give).
REQUIRED = {
    "inputs": ["items.parquet"],
    "model": "embedtab-smoke-clip",
    "source": "text",
    "projection": "text-pca64",
    "config": str(Path(__file__).resolve().parents[1] / "configs" / "item.yaml"),
    "data": ["items.parquet"],
    "workflow": "item",
    "embeddings": ["text"],
}
OUTPUT_FLAGS = {"--json", "--artifacts", "--help"}  # how a command reports, not what it does


@functools.cache
def cli_root():
    from embedtab.cli.main import app

    return typer.main.get_command(app)


def cli_command(path: tuple[str, ...]):
    command = cli_root()
    for name in path:
        command = command.commands[name]
    return command


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def accepted_flags(command, name: str) -> set[str]:
    """The long flags an option may have: its field name's, its aliases', or the one the registry says."""
    if name in command.cli_flags:
        return {command.cli_flags[name]}
    return {flag(n) for n in (name, *meta(command.options, name, "aliases"))}


def cli_param(command, name: str):
    """The typer parameter that fills option `name` of `command`: an argument of the same name or an
    option with one of its accepted long flags."""
    params = cli_command(command.cli).params
    arguments = [p for p in params if p.param_type_name == "argument" and p.name == name]
    options = [p for p in params if p.param_type_name == "option" and set(p.opts) & accepted_flags(command, name)]
    found = arguments + options
    wanted = accepted_flags(command, name)
    assert len(found) == 1, f"{command.command}: option {name!r} has {len(found)} CLI parameters (want one: {wanted})"
    return found[0]


def same_default(cli: object, declared_default: object) -> bool:
    as_list = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731  (click keeps a tuple)
    return as_list(cli) == as_list(declared_default)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_declared_option_has_its_cli_flag_with_the_declared_default_and_help(name):
    command = COMMANDS[name]
    for field in declared(command.options):
        help_text = help_of(command.options, field)
        assert help_text, f"{command.options.__name__}.{field} declares no help"
        param = cli_param(command, field)
        if param.param_type_name == "option":
            long_flags = {o for o in param.opts if o.startswith("--")}
            assert long_flags <= accepted_flags(command, field), f"{name}: {sorted(long_flags)} is not {field!r}"
        assert (param.help or "").startswith(help_text), f"{name} {field}: CLI help\n{param.help}\nnot\n{help_text}"
        required = not has_default(command.options, field) or meta(command.options, field, "required")
        if field in command.cli_flags:  # (`--apply` switches `reduce` into this stage: it is not required there)
            continue
        assert param.required == required, f"{name} {field}: required: CLI {param.required}, declared {required}"
        if not required:
            declared_default = default_of(command.options, field)
            assert same_default(param.default, declared_default), (
                f"{name} {field}: CLI default {param.default!r}, declared {declared_default!r}"
            )


@pytest.mark.parametrize("path", sorted({c.cli for c in COMMANDS.values()}))
def test_every_cli_option_is_a_declared_option(path):
    """No flag of a command that makes artifacts lives only in the CLI (but --json and --artifacts)."""
    commands = [c for c in COMMANDS.values() if c.cli == path]
    filled = {id(cli_param(c, f)) for c in commands for f in declared(c.options)}
    extra = [p.opts[0] for p in cli_command(path).params if id(p) not in filled and not set(p.opts) & OUTPUT_FLAGS]
    assert not extra, f"{' '.join(path)}: {extra} are not declared in {[c.options.__name__ for c in commands]}"


# ----------------------------------------------------------------------------- the Python API
class Built(Exception):
    """Raised instead of running a stage: carries the options the API built."""


API_CALLS = {  # command -> how its method is called with a dict of options (the main and required ones taken out)
    "encode text": lambda art, o: art.encode_text(o.pop("inputs"), **o),
    "encode image": lambda art, o: art.encode_image(o.pop("inputs"), model=o.pop("model"), **o),
    "reduce": lambda art, o: art.reduce(o.pop("source"), **o),
    "apply": lambda art, o: art.apply_projection(o.pop("projection"), o.pop("source"), **o),
    "fit-workflow": lambda art, o: art.fit_workflow(o.pop("config"), o.pop("data"), **o),
    "transform": lambda art, o: art.transform(o.pop("workflow"), o.pop("data"), **o),
    "lookup": lambda art, o: art.lookup(o.pop("embeddings"), **o),
    "export triton": lambda art, o: art.export_triton(o.pop("name"), **o),
}


@pytest.fixture
def built(monkeypatch):
    """API calls build their options and stop there (Built carries them)."""
    from embedtab import stages

    def run(self, store, options, reporter):
        raise Built(options)

    monkeypatch.setattr(stages.Command, "run", run)


def api_options(tmp_path, command: str, **values):
    import embedtab

    with pytest.raises(Built) as caught:
        API_CALLS[command](embedtab.Artifacts(tmp_path / "a"), dict(values))
    return caught.value.args[0]


def every_option(command) -> dict:
    """Every option of a command by its field name: the declared default, or a value when it is required."""
    cls = command.options
    required = [f for f in declared(cls) if not has_default(cls, f) or meta(cls, f, "required")]
    return {f: REQUIRED[f] if f in required else default_of(cls, f) for f in declared(cls)}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_api_accepts_every_declared_option_by_its_name(tmp_path, built, name):
    command = COMMANDS[name]
    values = every_option(command)
    main = values.pop(command.main)
    assert api_options(tmp_path, name, **{command.main: main}, **values) == command.make(main, values)


def test_the_api_accepts_the_cli_names_of_an_option(tmp_path, built):
    """`text_column` (the flag) and `columns` (the method's first name for it) are declared aliases."""
    for name in ("text_columns", "text_column", "columns"):
        assert api_options(tmp_path, "encode text", inputs=["x.parquet"], **{name: ["title"]}).text_columns == ["title"]
    with pytest.raises(TypeError, match="text_columns"):
        api_options(tmp_path, "encode text", inputs=["x.parquet"], text_column=["a"], columns=["b"])
    with pytest.raises(TypeError, match="batchsize"):
        api_options(tmp_path, "encode text", inputs=["x.parquet"], batchsize=3)


# ----------------------------------------------------------------------------- pipeline files
def yaml_value(value):
    return list(value) if isinstance(value, tuple) else value


def test_a_pipeline_file_accepts_every_declared_option_by_its_name(tmp_path):
    """One stage of every command, each with every option a pipeline may hold, spelled as the field
    (and once more with `-`): the stages' options are those the registry builds from the same values."""
    import yaml

    from embedtab import pipeline
    from embedtab.artifacts import ArtifactStore

    stages, expected = [], {}
    for name, command in COMMANDS.items():
        values = {f: yaml_value(v) for f, v in every_option(command).items() if meta(command.options, f, "pipeline") is True}
        main = values.pop(command.main)
        if name == "encode image":
            values["name"] = "image"  # (each stage makes its own artifact)
        if name == "apply":
            values["source"] = "image"
        stage = {name: main}
        stage.update({(f.replace("_", "-") if i % 2 else f): v for i, (f, v) in enumerate(values.items())})
        stages.append(stage)
        expected[name] = command.make(main, values)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    loaded = pipeline.load(path, ArtifactStore(tmp_path / "a"))
    assert {s.command: s.options for s in loaded.stages} == expected


@pytest.mark.parametrize("name", ["shard", "seal"])
def test_options_declared_out_of_pipelines_are_refused_there(tmp_path, capsys, name):
    from embedtab.cli.main import run
    from embedtab.encode.options import TextOptions

    assert meta(TextOptions, name, "pipeline") is not True
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"stages:\n  - encode text: x.parquet\n    {name}: {'1/2' if name == 'shard' else 'true'}\n")
    assert run(["run", str(path), "-A", str(tmp_path / "a")]) == 2
    assert f"encode text: '{name}' does not belong in a pipeline" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the recipe
def test_the_encode_recipe_is_the_declared_recipe_options():
    """Options declared `recipe` are recorded (IF_SET ones only when set: artifacts made before them
    stay up to date); how the work is done is not."""
    from embedtab.encode.options import ImageOptions, TextOptions

    text = TextOptions(inputs=["x"], text_columns=["title"])
    assert text.recipe() == {
        "model": None,
        "normalize": True,
        "precision": "auto",
        "id_column": "item_id",
        "dedupe": False,
        "modality": "text",
        "template": "{title}",
    }
    assert TextOptions(inputs=["x"], template="{t}", limit=5, batch_size=3, device="cpu").recipe()["limit"] == 5
    image = ImageOptions(inputs=["x"], model="m")
    assert image.recipe() == {
        "model": "m",
        "normalize": True,
        "precision": "auto",
        "id_column": "item_id",
        "dedupe": False,
        "modality": "image",
        "pretrained": None,
        "image_column": "image_path",
        "max_pixels": 50_000_000,
    }
    outside = ImageOptions(inputs=["x"], model="m", allow_outside_root=True, limit=2).recipe()
    assert outside["allow_outside_root"] is True and outside["limit"] == 2


def test_the_max_pixels_default_is_spelled_once():
    package = Path(__file__).resolve().parents[1] / "embedtab"
    spelled = [str(p.relative_to(package)) for p in package.rglob("*.py") for line in p.read_text().splitlines() if "50_000_000" in line]
    assert spelled == ["bounds.py"], spelled


# ----------------------------------------------------------------------------- --limit, end to end
def items(path: Path, n: int = 12) -> Path:
    pd.DataFrame({"item_id": range(100, 100 + n), "title": [f"wool hat number {i}" for i in range(n)]}).to_parquet(path)
    return path


def test_limit_on_the_command_line_encodes_the_first_rows_and_the_artifact_says_so(tmp_path, capsys):
    from embedtab.artifacts import ArtifactStore
    from embedtab.cli.main import run

    data, root = items(tmp_path / "items.parquet"), tmp_path / "a"
    assert run(["encode", "text", str(data), "-c", "title", "--limit", "5", "--json", "-A", str(root)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["summary"]["items"] == 5 and record["params"]["limit"] == 5
    frame = pd.read_parquet(root / "embeddings" / "text")
    assert frame["item_id"].tolist() == [100, 101, 102, 103, 104]
    assert run(["encode", "text", str(data), "-c", "title", "--limit", "5", "-A", str(root)]) == 0  # the same trial
    assert "up to date" in capsys.readouterr().err
    # The full run is not taken for the trial one, nor the trial for the full one.
    assert run(["encode", "text", str(data), "-c", "title", "-A", str(root)]) == 2
    assert "limit: 5 -> null" in capsys.readouterr().err
    assert ArtifactStore(root).get("embeddings", "text").summary["items"] == 5


@pytest.mark.parametrize(
    "command", [["encode", "text", "x.parquet", "-c", "title"], ["encode", "image", "x.parquet", "-m", "embedtab-smoke-clip"]]
)
def test_limit_zero_is_refused_naming_the_flag(tmp_path, capsys, command):
    from embedtab.cli.main import run

    assert run([*command, "--limit", "0", "-A", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.strip() == "Error: --limit: must be an integer of 1 or more (got 0)"
    assert not (tmp_path / "a").exists()


def test_limit_in_the_python_api(tmp_path, sample):
    import embedtab

    art = embedtab.Artifacts(tmp_path / "a")
    text = art.encode_text(items(tmp_path / "items.parquet"), text_column=["title"], limit=5)
    assert text.summary["items"] == 5 and len(text.to_pandas()) == 5
    image = art.encode_image(sample / "items.parquet", model="embedtab-smoke-clip", limit=3, batch_size=3)
    first = pd.read_parquet(sample / "items.parquet")["item_id"].head(3).tolist()
    assert image.to_pandas()["item_id"].tolist() == first


def test_limit_in_a_pipeline_file(tmp_path, capsys):
    from embedtab.cli.main import run

    data = items(tmp_path / "items.parquet")
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"stages:\n  - encode text: {data}\n    text-column: title\n    limit: 5\n")
    assert run(["run", str(path), "--json", "-A", str(tmp_path / "a")]) == 0
    assert json.loads(capsys.readouterr().out)["stages"][0]["rows"] == 5
    path.write_text(f"stages:\n  - encode text: {data}\n    text-column: title\n    limit: 0\n")
    assert run(["run", str(path), "-A", str(tmp_path / "a")]) == 2
    assert "pipeline.yaml:4: encode text: limit: must be an integer of 1 or more (got 0)" in capsys.readouterr().err
