"""The README's usage example runs as written (with fewer training steps)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    code = blocks[0]
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 12
    code = code.replace("steps=2000", "steps=3").replace(
        "TrainConfig(", "TrainConfig(progress=False, "
    )
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["x"].shape == (10, 1, 8, 8)
