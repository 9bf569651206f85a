"""Packaging: version ranges in pyproject.toml, exact pins in uv.lock, the same pins in
environment.yml, and every third-party import declared where it belongs (the core library's
dependencies, the ``pipeline`` extra, or the ``dev`` group)."""

import ast
import importlib.metadata
import re
import sys
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# what a user of the library never needs: the pipeline's tools
PIPELINE_ONLY = {"dvc", "dask", "distributed", "typst", "pypandoc-binary", "pypdf", "pyreadstat"}


def requirements(kind: str) -> list[Requirement]:
    if kind == "core":
        specs = PROJECT["project"]["dependencies"]
    elif kind in ("dev", "bench"):
        specs = PROJECT["dependency-groups"][kind]
    else:
        specs = PROJECT["project"]["optional-dependencies"][kind]
    return [Requirement(spec) for spec in specs]


def locked() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {canonicalize_name(p["name"]): p["version"] for p in lock["package"] if "version" in p}


def environment_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pins = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==?(\S+)", item)
            if match:
                pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_ranges_in_pyproject_exact_versions_in_the_lock():
    lock = locked()
    for kind in ("core", "pipeline", "dev"):
        for req in requirements(kind):
            name = canonicalize_name(req.name)
            assert name in lock, f"{req} ({kind}) is not in uv.lock"
            assert req.specifier.contains(Version(lock[name])), (
                f"uv.lock's {name} {lock[name]} is outside pyproject's {req}"
            )
            # a range, not a pin (ruff is pinned: its format check changes between releases)
            if name != "ruff":
                assert not any(s.operator == "==" for s in req.specifier), req
                assert any(s.operator in (">=", "~=") for s in req.specifier), (
                    f"{req}: no lower bound"
                )


def test_the_pipeline_tools_are_an_extra_not_a_dependency_of_the_library():
    core = {canonicalize_name(r.name) for r in requirements("core")}
    pipeline = {canonicalize_name(r.name) for r in requirements("pipeline")}
    assert not core & PIPELINE_ONLY
    assert {"dvc", "dask", "typst", "pypandoc-binary"} <= pipeline
    assert "--extra pipeline" in (ROOT / "Makefile").read_text()


def test_environment_yml_pins_the_locked_versions():
    lock, env = locked(), environment_pins()
    kinds = ("core", "pipeline", "dev")
    names = {canonicalize_name(r.name) for k in kinds for r in requirements(k)}
    names.add("distributed")  # dask[distributed]
    assert {name: env.get(name) for name in names} == {name: lock[name] for name in names}
    assert "quarto" in (ROOT / "environment.yml").read_text()


def third_party_imports(paths) -> set[str]:
    """Top-level names of every module imported (at any depth) by the files, stdlib and
    the project's own modules left out."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    local = {p.stem for p in (ROOT / "analysis").glob("*.py")}
    local |= {p.stem for p in (ROOT / "tests").glob("*.py")}
    return {n for n in names if n not in sys.stdlib_module_names and n != "hetfx"} - local


def distributions(modules: set[str]) -> dict[str, set[str]]:
    dists = importlib.metadata.packages_distributions()
    return {m: {canonicalize_name(d) for d in dists.get(m, [m])} for m in modules}


def undeclared(paths, declared: set[str]) -> dict[str, set[str]]:
    return {m: d for m, d in distributions(third_party_imports(paths)).items() if not d & declared}


def test_every_import_is_declared_where_it_belongs():
    core = {canonicalize_name(r.name) for r in requirements("core")}
    pipeline = core | {canonicalize_name(r.name) for r in requirements("pipeline")}
    pipeline.add("distributed")
    dev = pipeline | {canonicalize_name(r.name) for r in requirements("dev")}
    src = ROOT / "src" / "hetfx"
    library = [p for p in src.rglob("*.py") if "paper" not in p.relative_to(src).parts]
    bench = [ROOT / "analysis" / "benchmark_bambi.py"]  # the comparison with bambi
    paper = list((src / "paper").rglob("*.py")) + list((ROOT / "analysis").glob("*.py"))
    paper = [p for p in paper if p not in bench]
    assert library and paper
    assert undeclared(library, core) == {}, "the core library imports a non-core package"
    assert undeclared(paper, pipeline) == {}, "the pipeline imports an undeclared package"
    with_bench = pipeline | {canonicalize_name(r.name) for r in requirements("bench")}
    assert undeclared(bench, with_bench) == {}, "the benchmark imports an undeclared package"
    # the tests may also use what the library's dependencies bring along (packaging)
    dev.add("packaging")
    assert undeclared(list((ROOT / "tests").glob("*.py")), dev) == {}


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)\s", quick, flags=re.M)
    assert "make test" in commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    code = [line.strip() for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert code[-1] == "make test"
    assert "--extra pipeline" in (ROOT / "Makefile").read_text()


def test_the_longest_first_list_names_existing_test_files():
    """tests/conftest.py orders the files for the parallel workers by name: a renamed or
    removed file would silently fall back to collection order."""
    from conftest import LONGEST_FIRST

    missing = [name for name in LONGEST_FIRST if not (ROOT / "tests" / name).is_file()]
    assert missing == [] and len(set(LONGEST_FIRST)) == len(LONGEST_FIRST), missing
