"""The README's fenced code blocks and the commands in them, in order: what tests/test_readme.py
checks and what .ci/readme runs verbatim on a fresh clone."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: A block that needs what no fresh clone has (Slurm, a filesystem shared by a cluster's machines)
#: is shown, not run: these words mark it.
NOT_RUNNABLE = ("dask_jobqueue", "/shared/")


@dataclass(frozen=True)
class Block:
    language: str
    text: str

    @property
    def runnable(self) -> bool:
        return not any(name in self.text for name in NOT_RUNNABLE)


def blocks(path: Path = README) -> list[Block]:
    """Every fenced block of the README, in order."""
    return [Block(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


def command_lines(block: Block) -> list[str]:
    """A bash block's command lines: continuation lines joined, comments and blank lines
    dropped."""
    joined = block.text.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def commands(line: str) -> list[list[str]]:
    """The simple commands of one line (split at && and a trailing &), each as argv."""
    parts = re.split(r"\s&&\s", line.rstrip("&").strip())
    return [shlex.split(part) for part in parts]


def fastsgd_commands() -> list[list[str]]:
    """Every ``fastsgd …`` command of the README's bash blocks, in order, without "fastsgd"."""
    found = []
    for block in blocks():
        if block.language != "bash":
            continue
        for line in command_lines(block):
            found += [argv[1:] for argv in commands(line) if argv and argv[0] == "fastsgd"]
    return found
