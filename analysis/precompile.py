"""Compile ahead of time what a fresh clone's stages would compile first (not a stage).

Usage::

    python analysis/precompile.py                 # compile what analysis/precompile.txt lists
    python analysis/precompile.py --record CLONE  # rewrite the list from a rebuilt clone

A fresh clone's environment holds no bytecode: the first process that imports a module
compiles it (the Makefile lets it write the ``.pyc``); the first fit stage spent about 6 s
of CPU compiling arviz, xarray, matplotlib, scipy.stats, numba, ... on one core. Nor does
it hold numba's cache of the fit stages' kernels (:data:`KERNELS`): the first Bush-Prather
stage spent 9 s compiling them. ``make repro`` runs this script in the background while DVC
starts and the light stages (acquire, clean) run on one core: two processes, at a lower
priority, compile the exact engine's kernels (which the first fit stage's first model needs),
then one of them the listed modules in the order in which the pipeline first imports them
(skipping those whose bytecode is current) and the other the kernel the ``qmc`` engine's
others call (:data:`SHARED`), then both the other kernels. A stage that needs a module or
a kernel before it is ready compiles it itself, as before: each writer replaces the file
atomically (a rename), and the bytecode is the same bytes whoever writes it.

The list (:data:`LIST`) is derived, not typed: ``--record`` reads it off a clone in which
``make repro PRECOMPILE=`` (nothing compiled ahead of time) rebuilt the pipeline, as the
modules whose bytecode that run wrote, in the order it wrote them; ``analysis/timing.py
--fresh-clone --precompile-list analysis/precompile.txt`` does both.
"""

from __future__ import annotations

import argparse
import compileall
import multiprocessing as mp
import os
import py_compile
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "analysis" / "precompile.txt"
#: How the list names a module of the environment: relative to its ``site-packages``, under
#: this prefix (the project's own modules are named relative to the repository root).
SITE = "site-packages"
#: The project's folders whose modules the list may name.
PROJECT = ("src", "analysis")
WORKERS = 2
#: The compiled kernels of the stages, one group per worker: first the exact engine's
#: (:data:`LIBRARY_KERNELS`: every Gaussian fit and the simulation's workers use them), then
#: those of hetfx.models.varying_slopes.compile_kernels: Bush-Prather's ``qmc`` engine needs
#: every one (without numba's cache, a fresh clone, they took 13 s of CPU, 9 s of the first
#: Bush-Prather stage), Tomz-Weeks' A1 the mixture quantiles. Every kernel but
#: :data:`INDEPENDENT` calls :data:`SHARED`, so that the worker without it waits for it rather
#: than compile it again inside its own kernels.
KERNELS = (
    ["block_nodes", "_factor", "_collapsed_kernel", "_logp_many"],
    ["mixture_quantiles", "_mixture_quantiles", "_moments", "_draw"],
)
SHARED = "_factor"
INDEPENDENT = {"_factor", "_mixture_quantiles", "block_nodes", "mixture_quantiles"}


def _block_nodes() -> None:
    from hetfx.models import _block_kernel

    _block_kernel.precompile()


def _exact_mixture_quantiles() -> None:
    import numpy as np

    from hetfx.inference import mixture_quantiles

    mixture_quantiles(np.ones(2), np.zeros((2, 1)), np.ones((2, 1)), [0.5])


#: The exact engine's kernels (every Gaussian fit, the simulation's workers), which the
#: first fit stage needs first: compiled by a first call.
LIBRARY_KERNELS = {"block_nodes": _block_nodes, "mixture_quantiles": _exact_mixture_quantiles}
#: Below the stages (nice 0): the compilation takes the second core, not the first.
NICENESS = 10


def site_packages() -> list[Path]:
    """The folders of this interpreter's environment that hold installed modules."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(Path(paths[key]) for key in ("purelib", "platlib")))


def resolve(entry: str, root: Path = ROOT, sites: list[Path] | None = None) -> Path | None:
    """The source file of a list ``entry`` in this environment, or None if there is none."""
    head, _, rest = entry.partition("/")
    if head == SITE:
        candidates = [site / rest for site in (sites or site_packages())]
    else:
        candidates = [root / entry]
    return next((path for path in candidates if path.is_file()), None)


def compile_files(paths: list[Path]) -> int:
    """Compile each of ``paths`` whose bytecode is missing or stale; returns the number of
    failures (a file that cannot be compiled is left to the import that needs it)."""
    failed = 0
    for path in paths:
        ok = compileall.compile_file(
            path, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP
        )
        failed += not ok
    return failed


def compile_kernels(names: list[str], shared=None) -> bool:
    """Compile the named kernels (:data:`LIBRARY_KERNELS`, else those of
    :mod:`hetfx.models.varying_slopes`) into numba's cache (where the stages load them from);
    False if that failed (the stage compiles them).
    ``shared`` (an event) is set once :data:`SHARED` is compiled, and awaited before a kernel
    that calls it."""
    failed = False
    for name in names:
        if shared is not None and name not in INDEPENDENT:
            shared.wait(timeout=120)
        try:
            if name in LIBRARY_KERNELS:
                LIBRARY_KERNELS[name]()
                continue
            from hetfx.models import varying_slopes

            varying_slopes.compile_kernels([name])
        except Exception:  # noqa: BLE001 - anything: the stage compiles what it needs itself
            failed = True
        finally:
            if shared is not None and name == SHARED:
                shared.set()
    return not failed


def _worker(paths: list[Path], kernels: list[str], shared) -> None:
    """A forked child's job, at a lower priority: the exact engine's kernels among
    ``kernels`` (:data:`LIBRARY_KERNELS`: the first fit stage's first model needs them, and
    they are ready before it starts), then ``paths``, then the other kernels; the exit status
    is the number of failures (at most 100)."""
    try:
        os.nice(NICENESS)
    except OSError:  # pragma: no cover - not allowed: compile at the same priority
        pass
    first = [name for name in kernels if name in LIBRARY_KERNELS]
    rest = [name for name in kernels if name not in LIBRARY_KERNELS]
    failed = not compile_kernels(first)
    failed += compile_files(paths) + (not compile_kernels(rest, shared))
    sys.exit(min(failed, 100))


def split_modules(paths: list[Path], groups: list[list[str]]) -> list[list[Path]]:
    """The modules of each worker (``groups``: its kernels): the workers that do not compile
    :data:`SHARED` share them, each taking every n-th, so that all follow the list's order
    (all workers where every one or none compiles it). The worker with :data:`SHARED` starts
    it as soon as its first kernels are done: in a fresh clone, with the modules shared by
    both workers, the other worker waited 10 s for :data:`SHARED` and the first
    Bush-Prather stage 5 s for the last kernel (measured: 1-2 s less for that stage)."""
    takers = [i for i, group in enumerate(groups) if SHARED not in group]
    if not takers:
        takers = list(range(len(groups)))
    parts: list[list[Path]] = [[] for _ in groups]
    for k, i in enumerate(takers):
        parts[i] = paths[k :: len(takers)]
    return parts


def compile_listed(
    entries: list[str],
    workers: int = WORKERS,
    root: Path = ROOT,
    sites: list[Path] | None = None,
    kernels: tuple[list[str], ...] = (),
) -> int:
    """Compile the modules of ``entries`` and the numba kernels ``kernels[i]`` on ``workers``
    forked processes (all in this process where forking is not available): worker ``i``
    compiles its kernels, the exact engine's first (see :func:`_worker`), and its share of
    the modules (:func:`split_modules`); returns the number of failures."""
    paths = [p for p in (resolve(e, root, sites) for e in entries) if p is not None]
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        return compile_files(paths) + sum(not compile_kernels(g) for g in kernels)
    groups = [[name for group in kernels[i::workers] for name in group] for i in range(workers)]
    parts = split_modules(paths, groups)
    context = mp.get_context("fork")
    shared = context.Event()
    if not any(SHARED in group for group in groups):
        shared.set()  # nothing to wait for
    children = [
        context.Process(target=_worker, args=(parts[i], groups[i], shared)) for i in range(workers)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join()
    return sum(child.exitcode if child.exitcode >= 0 else 1 for child in children)


def read_list(path: Path = LIST) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def recorded(clone: Path) -> list[str]:
    """The list read off a rebuilt ``clone``: every module of its ``.venv`` and of its
    project folders with bytecode of this interpreter, oldest bytecode first."""
    tag = sys.implementation.cache_tag
    found: list[tuple[float, str]] = []
    sites = [Path(p) for p in (clone / ".venv").glob("lib/python*/site-packages")]
    bases = [(site, f"{SITE}/") for site in sites] + [(clone / d, f"{d}/") for d in PROJECT]
    for base, prefix in bases:
        for pyc in base.rglob(f"__pycache__/*.{tag}.pyc"):
            source = pyc.parent.parent / (pyc.name.split(".")[0] + ".py")
            if source.is_file():
                rel = source.relative_to(base).as_posix()
                found.append((pyc.stat().st_mtime, prefix + rel))
    return [entry for _, entry in sorted(found)]


def write_list(entries: list[str], path: Path = LIST) -> None:
    header = (
        "# Modules the pipeline imports, in the order a fresh clone's `make repro` first\n"
        "# imports them: written by `python analysis/timing.py --fresh-clone --precompile-list`\n"
        "# (analysis/precompile.py), read by `make repro`. Not to be edited by hand.\n"
    )
    path.write_text(header + "".join(f"{e}\n" for e in entries), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--record", type=Path, help="rewrite the list from this rebuilt clone")
    parser.add_argument("--list", type=Path, default=LIST)
    args = parser.parse_args(argv)
    if args.record:
        entries = recorded(args.record)
        write_list(entries, args.list)
        print(f"{args.list}: {len(entries)} modules")
        return 0
    if not args.list.is_file():
        return 0
    compile_listed(read_list(args.list), kernels=KERNELS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
