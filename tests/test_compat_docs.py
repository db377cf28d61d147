"""docs/compat.md's examples run as written on a CPU, each where its library is installed."""

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "compat.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
PEERS = ("normflows", "nflows", "zuko", "FrEIA", "pyro")


def test_the_page_has_an_example_per_library():
    for library in PEERS:
        assert any(library in example for example in EXAMPLES[1:]), library


@pytest.mark.parametrize("index", range(1, len(EXAMPLES)))  # the first is a fragment (`model` is the reader's)
def test_example_runs(index, capsys):
    for library in PEERS:
        if library in EXAMPLES[index]:
            pytest.importorskip(library)
    exec(compile(EXAMPLES[index], f"docs/compat.md example {index}", "exec"), {})
    printed = capsys.readouterr().out
    assert "True" in printed and "False" not in printed, printed
