"""analysis/precompile.py: the modules the stages import, compiled ahead of time by make repro."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

spec = importlib.util.spec_from_file_location("precompile", ROOT / "analysis" / "precompile.py")
precompile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(precompile)


def pyc_of(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A project (``root/src``) and an environment's ``site-packages`` with a few modules."""
    root, site = tmp_path / "root", tmp_path / "site"
    for path, text in {
        site / "pkg" / "__init__.py": "from pkg import a\n",
        site / "pkg" / "a.py": "X = [i * i for i in range(3)]\n",
        root / "src" / "proj" / "m.py": "def f():\n    return 1\n",
        site / "broken.py": "def f(:\n",
    }.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root, site


ENTRIES = [
    "site-packages/pkg/__init__.py",
    "site-packages/pkg/a.py",
    "src/proj/m.py",
    "site-packages/not_installed.py",  # a stale entry: skipped
]


def test_compile_listed_writes_current_timestamp_bytecode(tmp_path):
    root, site = tree(tmp_path)
    assert precompile.compile_listed(ENTRIES, workers=2, root=root, sites=[site]) == 0
    sources = [site / "pkg" / "__init__.py", site / "pkg" / "a.py", root / "src/proj/m.py"]
    for source in sources:
        header = pyc_of(source).read_bytes()[:16]
        magic, flags, mtime, size = struct.unpack("<4sLLL", header)
        stat = source.stat()
        # what the import system accepts without recompiling: timestamp-based, current
        assert magic == importlib.util.MAGIC_NUMBER and flags == 0
        assert (mtime, size) == (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)
    assert not (site / "__pycache__").exists()  # not listed: not compiled


def test_current_bytecode_is_left_alone_and_a_broken_module_is_left_to_its_import(tmp_path):
    root, site = tree(tmp_path)
    precompile.compile_listed(ENTRIES, workers=1, root=root, sites=[site])
    written = pyc_of(site / "pkg" / "a.py").stat().st_mtime_ns
    os.utime(pyc_of(site / "pkg" / "a.py"), ns=(written - 10**9, written - 10**9))
    entries = ["site-packages/broken.py", *ENTRIES]
    assert precompile.compile_listed(entries, workers=2, root=root, sites=[site]) == 1
    assert pyc_of(site / "pkg" / "a.py").stat().st_mtime_ns == written - 10**9  # not rewritten
    assert not pyc_of(site / "broken.py").exists()


def test_ahead_of_time_bytecode_is_the_bytes_an_import_writes(tmp_path):
    """A stage importing a module while this script compiles it is harmless: both write the
    same bytes, each through a rename (py_compile and the import system alike)."""
    root, site = tree(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    code = f"import sys; sys.path.insert(0, {str(site)!r}); import pkg"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    imported = {p: pyc_of(p).read_bytes() for p in (site / "pkg").glob("*.py")}
    for path in imported:
        pyc_of(path).unlink()
    precompile.compile_listed(ENTRIES, workers=2, root=root, sites=[site])
    assert imported and {p: pyc_of(p).read_bytes() for p in imported} == imported


def test_the_list_is_read_off_a_rebuilt_clone_oldest_bytecode_first(tmp_path):
    clone = tmp_path / "clone"
    site = clone / ".venv" / "lib" / "python3.11" / "site-packages"
    tag = sys.implementation.cache_tag
    order = [
        (site / "zeta" / "__init__.py", 1),
        (clone / "src" / "proj" / "m.py", 2),
        (site / "alpha" / "b.py", 3),
        (clone / "analysis" / "_stage.py", 4),
    ]
    for source, stamp in order:
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("x = 1\n", encoding="utf-8")
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        pyc.parent.mkdir(exist_ok=True)
        pyc.write_bytes(b"")
        os.utime(pyc, (1_000_000 + stamp, 1_000_000 + stamp))
    # no source (a module deleted since), another optimisation level: not listed
    (site / "alpha" / "__pycache__" / f"gone.{tag}.pyc").write_bytes(b"")
    (site / "alpha" / "__pycache__" / f"b.{tag}.opt-1.pyc").write_bytes(b"")
    assert precompile.recorded(clone) == [
        "site-packages/zeta/__init__.py",
        "src/proj/m.py",
        "site-packages/alpha/b.py",
        "analysis/_stage.py",
    ]
    precompile.write_list(precompile.recorded(clone), tmp_path / "list.txt")
    assert precompile.read_list(tmp_path / "list.txt") == precompile.recorded(clone)


def test_the_committed_list_is_current():
    """Every installed module of analysis/precompile.txt is there (a dependency update that
    moves modules calls for `timing.py --fresh-clone --precompile-list`; a project module
    removed since is merely skipped), and the list holds what a fit stage spent its start
    compiling."""
    entries = precompile.read_list()
    installed = [e for e in entries if e.startswith(f"{precompile.SITE}/")]
    missing = [e for e in installed if precompile.resolve(e) is None]
    assert not missing, f"{len(missing)} listed modules not installed, e.g. {missing[:3]}"
    for module in ("arviz/__init__.py", "xarray/__init__.py", "scipy/stats/__init__.py"):
        assert f"{precompile.SITE}/{module}" in entries
    assert "src/hetfx/paper/studies.py" in entries and len(set(entries)) == len(entries)


def test_kernels_are_compiled_into_numbas_cache_and_a_failure_is_left_to_the_stage():
    from hetfx.models import varying_slopes

    assert precompile.compile_kernels(["_mixture_quantiles"])
    assert varying_slopes._mixture_quantiles.signatures  # compiled (or loaded from the cache)
    assert not precompile.compile_kernels(["_no_such_kernel"])
    every = {name for group in precompile.KERNELS for name in group}
    # every kernel, once
    assert every == set(varying_slopes._kernel_signatures()) | set(precompile.LIBRARY_KERNELS)
    assert sum(len(group) for group in precompile.KERNELS) == len(every)
    assert precompile.compile_kernels(["block_nodes", "mixture_quantiles"])
    from hetfx.models import _block_kernel, _mixtures

    assert _block_kernel.kernel().signatures and _mixtures.quantiles.signatures


def test_modules_go_to_the_workers_that_do_not_compile_the_shared_kernel():
    """The worker that compiles SHARED gets no modules (the kernels that wait for it start
    sooner); the others share them in the list's order; without SHARED, every worker does."""
    paths = [Path(f"m{i}.py") for i in range(5)]
    shared = precompile.SHARED
    assert precompile.split_modules(paths, [["block_nodes", shared], ["mixture_quantiles"]]) == [
        [],
        paths,
    ]
    three = precompile.split_modules(paths, [["a"], [shared], ["b"]])
    assert three == [paths[0::2], [], paths[1::2]]
    assert precompile.split_modules(paths, [["a"], ["b"]]) == [paths[0::2], paths[1::2]]
    assert precompile.split_modules(paths, [[shared]]) == [paths]
