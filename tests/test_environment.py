"""The two environment definitions pin the same library versions."""

import re
import tomllib

import yaml

from conftest import ROOT


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    specs = project["project"]["dependencies"] + project["dependency-groups"]["dev"]
    pins = {}
    for spec in specs:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[a-z,]+\])?==(\S+)", spec)
        name, version = match.group(1, 2)
        pins[name.lower()] = version
        if spec.startswith("dask[distributed]"):
            pins["distributed"] = version
    return pins


def environment_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pins = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==?(\S+)", item)
            if match:
                pins[match.group(1).lower()] = match.group(2)
    return pins


def test_every_pin_is_the_same_in_both():
    py, env = pyproject_pins(), environment_pins()
    assert py, "pyproject.toml pins nothing"
    assert {name: env.get(name) for name in py} == py
    assert "quarto" in (ROOT / "environment.yml").read_text()
