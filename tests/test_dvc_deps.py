"""Every DVC stage lists what it runs: each project module its script imports (transitively)
is a dependency of the stage, and each parameter it reads is one of its ``params``.

The stages are resolved by DVC itself (``foreach``/``matrix`` expanded, ``${...}``
interpolated), so the test sees exactly the commands and dependencies ``dvc repro`` uses.
Imports are found with :mod:`ast` (every ``import`` statement, including the lazy ones inside
functions: a stage may run them), restricted to files of the project (``analysis/``,
``src/hetfx/``).
"""

from __future__ import annotations

import ast
import json
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ANALYSIS = ROOT / "analysis"


# --------------------------------------------------------------------------- imports


def _module_file(name: str, script_dir: Path) -> Path | None:
    """The project file of module ``name`` (a package's ``__init__.py``), or None."""
    parts = name.split(".")
    for base in (script_dir, SRC):
        stem = base.joinpath(*parts)
        for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """Dotted names of every module an ``import`` statement in ``path`` may load (a
    ``from pkg import name`` yields ``pkg`` and ``pkg.name``, which may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                package = path.relative_to(SRC).parent.parts if path.is_relative_to(SRC) else ()
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a submodule runs its packages."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def project_imports(script: Path) -> frozenset[Path]:
    """Project files ``script`` loads, directly or through other project files (itself
    included)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_modules(path):
            for module in _with_parents(name):
                found = _module_file(module, script.parent)
                if found is not None and found not in seen:
                    todo.append(found)
    return frozenset(seen)


# --------------------------------------------------------------------------- stages


@cache
def stages() -> tuple:
    """(name, cmd, file deps, params keys) of every stage, as DVC resolves dvc.yaml."""
    from dvc.repo import Repo

    out = []
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            files, params = [], []
            for dep in stage.deps:
                if hasattr(dep, "params"):
                    params.extend(dep.params or [])
                else:
                    files.append(Path(dep.def_path))
            out.append((stage.addressing, stage.cmd, tuple(files), tuple(params)))
    return tuple(out)


def stage_script(cmd: str) -> Path | None:
    words = shlex.split(cmd)
    scripts = [w for w in words if w.endswith(".py")]
    return ROOT / scripts[0] if scripts else None


def covered(path: Path, deps: tuple[Path, ...]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == dep or rel.is_relative_to(dep) for dep in deps)


def test_import_walk_finds_lazy_and_transitive_imports():
    """The walker itself: analysis/simulate.py loads _stage.py and params.py through
    _stage, and saturated_ols.py through a lazy import inside hetfx.paper.simulation."""
    found = {p.relative_to(ROOT).as_posix() for p in project_imports(ANALYSIS / "simulate.py")}
    assert {
        "analysis/_stage.py",
        "src/hetfx/paper/params.py",
        "src/hetfx/__init__.py",
        "src/hetfx/models/saturated_ols.py",
        "src/hetfx/models/__init__.py",
    } <= found
    assert not any("site-packages" in p for p in found)


def test_every_stage_has_a_script():
    for name, cmd, _, _ in stages():
        script = stage_script(cmd)
        assert script is not None and script.is_file(), f"{name}: no script in {cmd!r}"


@pytest.mark.parametrize("name", [s[0] for s in stages()])
def test_stage_lists_every_project_module_it_imports(name):
    _, cmd, deps, _ = next(s for s in stages() if s[0] == name)
    script = stage_script(cmd)
    missing = sorted(
        p.relative_to(ROOT).as_posix() for p in project_imports(script) if not covered(p, deps)
    )
    assert not missing, f"stage {name} imports but does not depend on: {missing}"


# --------------------------------------------------------------------------- params


def _params_reads(script: Path) -> set[str]:
    """Dotted params keys a stage script reads through ``load_params()``.

    Follows the names bound to ``load_params()`` (or an attribute of it) and the names
    bound to attributes of those (``cfg = params.models``); ``getattr(cfg, x)`` with a
    non-constant ``x`` reads ``<cfg>.*`` (returned as ``models.*``).
    """
    tree = ast.parse(script.read_text(encoding="utf-8"))
    bound: dict[str, str] = {}
    methods = {
        id(n.func)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }

    def chain(node) -> str | None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "load_params":
                return ""
            if node.func.id == "getattr" and len(node.args) >= 2:
                base = chain(node.args[0])
                if base is None:
                    return None
                arg = node.args[1]
                key = arg.value if isinstance(arg, ast.Constant) else "*"
                return f"{base}.{key}".lstrip(".")
        if isinstance(node, ast.Name):
            return bound.get(node.id)
        if isinstance(node, ast.Attribute):
            base = chain(node.value)
            if base is None or id(node) in methods:  # `.model_dump()` reads no key
                return base
            return f"{base}.{node.attr}".lstrip(".")
        return None

    reads: set[str] = set()
    # two passes: names bound late in the file may be used in functions defined earlier
    for _ in range(2):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                value = chain(node.value)
                if value is not None:
                    bound[node.targets[0].id] = value
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute | ast.Call):
                value = chain(node)
                if value:
                    reads.add(value)
    # keep the longest chains: `params.models.seed` also yields `params.models`
    return {r for r in reads if not any(o.startswith(r + ".") for o in reads)}


def _declared(key: str, params: tuple[str, ...]) -> bool:
    """A declared key covers itself and everything under it."""
    return any(key == d or key.startswith(d + ".") for d in params)


def test_params_reader_follows_aliases():
    reads = _params_reads(ANALYSIS / "fit.py")
    assert {"models.seed", "models.codings", "models.gate.max_r_hat"} <= reads
    assert "models.*" in reads and not any("model_dump" in r for r in reads)
    assert "simulation.n_obs" in _params_reads(ANALYSIS / "simulate.py")


@pytest.mark.parametrize("name", [s[0] for s in stages()])
def test_stage_declares_every_param_it_reads(name):
    _, cmd, _, params = next(s for s in stages() if s[0] == name)
    script = stage_script(cmd)
    argv = shlex.split(cmd)
    with open(ROOT / "params.yaml") as handle:
        values = yaml.safe_load(handle)
    missing = []
    for key in sorted(_params_reads(script)):
        # getattr(cfg, <variable>): the section named by one of the stage's arguments, if any
        parts, section = [], values
        for part in key.split("."):
            if part == "*":
                hits = [a for a in argv if isinstance(section, dict) and a in section]
                if not hits:
                    break
                part = hits[0]
            parts.append(part)
            section = section.get(part) if isinstance(section, dict) else None
        else:
            if not _declared(".".join(parts), params):
                missing.append(".".join(parts))
    assert not missing, f"stage {name} reads params it does not declare: {missing}"


class _Recording(dict):
    """A params mapping that records the dotted key of every value read from it."""

    def __init__(self, data: dict, reads: set[str], prefix: str = "") -> None:
        super().__init__(data)
        self._reads, self._prefix = reads, prefix

    def _wrap(self, key, value):
        path = f"{self._prefix}{key}"
        if isinstance(value, dict):  # a section: what is read from it is recorded
            return _Recording(value, self._reads, path + ".")
        self._reads.add(path)
        return value

    def __getitem__(self, key):
        return self._wrap(key, super().__getitem__(key))

    def get(self, key, default=None):
        return self._wrap(key, super().get(key)) if key in self else default

    def _all(self):  # iterating a section reads all of it
        self._reads.add(self._prefix.rstrip(".") or "*")

    def __iter__(self):
        self._all()
        return super().__iter__()

    def items(self):
        self._all()
        return [(k, self[k]) for k in super().keys()]

    def values(self):
        self._all()
        return [self[k] for k in super().keys()]

    def keys(self):
        self._all()
        return super().keys()


def test_report_stage_declares_every_param_it_reads(tmp_path):
    """analysis/report.py passes params.yaml to hetfx.paper.report as a dict: run it on the
    synthetic results of tests/test_report.py and record what it reads."""
    import importlib.util
    import sys

    from test_report import make_results

    make_results(tmp_path / "results")
    spec = importlib.util.spec_from_file_location("report_stage", ANALYSIS / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["report_stage"] = module
    spec.loader.exec_module(module)
    with open(ROOT / "params.yaml") as handle:
        values = yaml.safe_load(handle)
    reads: set[str] = set()
    code = module.build(
        tmp_path / "results",
        ROOT / "data" / "clean",
        _Recording(values, reads),
        tmp_path / "manuscript",
    )
    assert code == 0
    # the recorder works: the priors table reads whole model sections, the text the seed
    assert "models.m1.gamma_sd" in reads and "simulation.root_seed" in reads
    _, _, _, params = next(s for s in stages() if s[0] == "report")
    missing = sorted(r for r in reads if r != "*" and not _declared(r, params))
    assert not missing, f"stage report reads params it does not declare: {missing}"


# --------------------------------------------------------------------------- metrics, plots


def _dvc(*args: str) -> str:
    import shutil
    import subprocess
    import sys

    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    done = subprocess.run([dvc, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_dvc_metrics_show_lists_every_fit_and_the_simulation():
    shown = json.loads(_dvc("metrics", "show", "--json"))
    files = {
        path: entry.get("data", {})
        for rev in shown.values()
        for path, entry in rev.get("data", {}).items()
    }
    fits = [
        f"results/tomz_weeks/{m}_{c}/diagnostics.json"
        for m in ("m1", "m2", "a1", "m1_ols", "m2_ols", "m1_main_effects", "m2_main_effects")
        for c in ("published", "corrected")
    ]
    fits += [f"results/bush_prather/bp_{c}/diagnostics.json" for c in ("published", "corrected")]
    expected = fits + [
        "results/simulation/spec/metrics.json",
        "results/simulation/groupsize/metrics.json",
    ]
    assert sorted(files) == sorted(expected)
    for path in fits[:2]:
        assert {"max_r_hat", "min_ess_bulk", "divergences"} <= set(files[path]), path
    assert files["results/simulation/spec/metrics.json"]["128"]["hierarchical"]["rmse_mean"] > 0


def test_dvc_plots_show_draws_the_rmse_curves_and_the_figures(tmp_path):
    shown = json.loads(_dvc("plots", "show", "--json", "-o", str(tmp_path)))["data"]
    rmse = next(v for k, v in shown.items() if k.startswith("RMSE"))[0]
    points = rmse["content"]["data"]["values"]
    assert {(p["n_groups"], p["field"]) for p in points} == {
        (str(g), m) for g in (8, 16, 32, 64, 128) for m in ("hierarchical", "ols")
    }
    figures = {f"manuscript/figures/figure{i}.png" for i in (1, 2, 3, 4, 5, 6, 7, 8, "_a1", "_a2")}
    assert figures <= set(shown)
    assert all(shown[f][0]["type"] == "image" for f in figures)


# --------------------------------------------------------------------------- one source


def test_simulation_sample_size_reaches_the_text(tmp_path):
    """`-S simulation.n_obs=1000`: the simulate stage runs 1,000 rows and records them in
    design.json, which is what the report quotes (it no longer reads a code constant)."""
    import os
    import subprocess
    import sys

    import pandas as pd

    from hetfx.paper import report as R

    with open(ROOT / "params.yaml") as handle:
        params = yaml.safe_load(handle)
    params["simulation"] |= {
        "replicates": 1,
        "small": True,
        "n_jobs": 1,
        "backend": "sequential",
        "n_obs": 1000,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(ANALYSIS / "simulate.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    sim = tmp_path / "results" / "simulation"
    design = json.loads((sim / "design.json").read_text())
    assert design["n_obs"] == 1000
    est = pd.read_parquet(sim / "spec" / "estimates.parquet")
    assert (est.groupby(["condition", "model"])["n"].sum() == 1000).all()
    numbers = R.design_numbers(design)
    assert (numbers["sim_n"], numbers["sim1_size_max"]) == (1000, 125)


def test_every_committed_result_is_written_by_a_stage():
    """A stage dropped from dvc.yaml would leave its committed outputs to go stale unnoticed."""
    import subprocess

    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        outs = [Path(o.fs_path).relative_to(ROOT) for s in repo.index.stages for o in s.outs]
    tracked = subprocess.run(
        ["git", "ls-files", "results", "manuscript/figures", "manuscript/tables", "docs/_output"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    orphans = [
        t
        for t in tracked
        if not t.endswith(".gitignore") and not any(Path(t).is_relative_to(o) for o in outs)
    ]
    assert not orphans, f"committed but written by no stage: {orphans[:10]}"


def test_dvc_lock_records_only_the_stages_of_dvc_yaml():
    """DVC keeps a removed stage's entry in dvc.lock; stale entries made every stage's lock
    update parse and write a third more YAML (1,220 of 3,571 lines, 14 old stages)."""
    names = {name for name, *_ in stages()}
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text(encoding="utf-8"))
    stale = sorted(set(lock["stages"]) - names)
    assert not stale, f"dvc.lock records stages dvc.yaml no longer has: {stale}"
