"""The runnable examples in docs/ run, as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: pages whose ```python blocks are complete programs
RUNNABLE = ["potential.md", "model_files.md", "vibrations.md", "committees.md", "training.md",
            "streaming.md", "physics.md", "md.md", "equivariant.md"]


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


@pytest.mark.parametrize("page", RUNNABLE)
def test_examples_run(page, tmp_path, monkeypatch):
    blocks = _blocks(page)
    assert blocks, f"{page} has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        code = code.replace("/tmp/", f"{tmp_path}/")
        exec(compile(code, f"docs/{page}", "exec"), {"__name__": f"docs_{page}"})
