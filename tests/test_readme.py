"""The README holds: its two set-up commands are the ones CI runs, every ``fastsgd`` command in
it parses, every file an example reads is made by an earlier example or is in the repository,
every Python example imports what it uses, and its GRID.toml example is examples/quick.toml.
Running every example verbatim on a fresh clone (minutes): ``python .ci/readme``."""

from __future__ import annotations

import ast
import builtins
import re

import click
import pytest

from readme_blocks import ROOT, blocks, command_lines, commands, fastsgd_commands

from fastsgd.cli import cli

TEST_COMMAND = 'pip install ".[test]" && python -m pytest'


def test_two_set_up_commands_near_the_top_and_ci_runs_the_second():
    first, second = [b for b in blocks() if b.language == "bash"][:2]
    assert len(command_lines(first)) == len(command_lines(second)) == 1
    assert "pip install . &&" in first.text and "fastsgd simulate" in first.text
    assert TEST_COMMAND in second.text
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
    head = (ROOT / "README.md").read_text()[:1500]
    assert first.text.strip() in head and second.text.strip() in head


@pytest.mark.parametrize("argv", fastsgd_commands(), ids=" ".join)
def test_every_fastsgd_command_of_the_readme_parses(argv):
    """Options, choices and counts as click converts them (no command is run)."""
    if "--help" in argv:
        return
    name, *rest = argv
    with click.Context(cli, info_name="fastsgd") as ctx:
        command = cli.get_command(ctx, name)
        assert command is not None, f"fastsgd has no command {name!r}"
        try:
            command.make_context(name, rest, parent=ctx)
        except click.ClickException as exc:
            pytest.fail(f"fastsgd {' '.join(argv)}: {exc.format_message()}")


#: Positional and option arguments that name a file the command reads.
READS = {"ode": (0,), "compare": (0, 1), "plot": (0,), "sweep": (0,)}
READ_OPTIONS = ("--floor", "--reference", "--latent-data")


def _outputs_and_inputs(argv: list[str]) -> tuple[list[str], list[str]]:
    positional, outputs, inputs, i = [], [], [], 1
    while i < len(argv):
        if argv[i].startswith("-"):
            value = argv[i + 1] if i + 1 < len(argv) else ""
            if argv[i] in ("--out", "--plot"):
                outputs.append(value)
            elif argv[i] in READ_OPTIONS:
                inputs.append(value)
            i += 1 if argv[i] in ("--overwrite", "--quiet", "-q", "--center-inputs",
                                  "--first-layer-only") else 2
            continue
        positional.append(argv[i])
        i += 1
    inputs += [positional[k] for k in READS.get(argv[0], ()) if k < len(positional)]
    return outputs, inputs


def _python_files(text: str) -> tuple[list[str], list[str]]:
    made = re.findall(r'out="([^"]+)"', text) + re.findall(r'savefig\("([^"]+)"\)', text)
    read = [p for p in re.findall(r'"([^"]+\.(?:h5|toml|csv))"', text) if p not in made]
    return made, read


def test_every_file_an_example_reads_is_made_before_or_in_the_repository():
    made: set[str] = set()
    missing = []
    for block in (b for b in blocks() if b.runnable):
        if block.language == "bash":
            for line in command_lines(block):
                for argv in commands(line):
                    if argv[:1] != ["fastsgd"] or len(argv) < 2:
                        continue
                    outputs, inputs = _outputs_and_inputs(argv[1:])
                    missing += [p for p in inputs if p not in made and not (ROOT / p).exists()]
                    made.update(outputs)
                    if argv[1] == "sweep":
                        made.update(f"{o}/summary_long.csv" for o in outputs)
        elif block.language == "python":
            outputs, inputs = _python_files(block.text)
            missing += [p for p in inputs if p not in made and not (ROOT / p).exists()]
            made.update(outputs)
    assert missing == []


def _undefined_names(source: str) -> set[str]:
    tree = ast.parse(source)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)} - bound


def test_every_python_example_imports_what_it_uses():
    python = [b for b in blocks() if b.language == "python"]
    assert len(python) >= 4
    for block in python:
        assert _undefined_names(block.text) == set(), block.text


def test_the_grid_example_is_examples_quick_toml():
    (toml,) = [b for b in blocks() if b.language == "toml"]
    assert toml.text == (ROOT / "examples" / "quick.toml").read_text()
