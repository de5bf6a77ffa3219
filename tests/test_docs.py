"""Docs stay current: every config key is documented, and CI runs the README's test command."""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from sweep.config import SweepConfig

ROOT = Path(__file__).resolve().parents[1]


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += config_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_every_config_key_is_documented():
    doc = (ROOT / "docs" / "config.md").read_text()
    keys = config_keys(SweepConfig)
    assert len(keys) > 30
    assert [k for k in keys if f"`{k}`" not in doc] == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quickstart)
    assert len(commands) == 2 and commands[0].endswith("python -m sweep.run")
    assert commands[1] == "bash .ci/run"  # CI runs .ci/run: the same command, chromium's install included
    script = (ROOT / ".ci" / "run").read_text()
    assert "apt-get install -y -qq chromium" in script and script.rstrip().endswith(
        "pip install torch==2.14.1 torchvision==0.29.1 -e '.[test]' && python -m pytest")
