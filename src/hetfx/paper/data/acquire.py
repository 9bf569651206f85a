"""Acquire the raw survey files: verify every file against the checksum manifest.

The manifest (``data/manifest.csv`` in the project) lists, for each raw file, its path
relative to the source directory, SHA-256, size in bytes, row count, study, citation and
terms of use. :func:`acquire` checks a source directory against it and copies the verified
files into a destination directory, atomically: on any failure nothing is written.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

MANIFEST_COLUMNS = ["file", "sha256", "bytes", "rows", "study", "citation", "terms_of_use"]


class AcquireError(RuntimeError):
    """A raw file is missing or differs from the manifest."""


@dataclass(frozen=True)
class VerifiedFile:
    """One raw file that matched the manifest."""

    file: str
    sha256: str
    bytes: int
    rows: int
    study: str


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate the checksum manifest.

    Raises
    ------
    AcquireError
        If the manifest is missing columns, has duplicate files or malformed hashes.
    """
    path = Path(path)
    if not path.is_file():
        raise AcquireError(f"checksum manifest not found: {path}")
    manifest = pd.read_csv(path, dtype={"file": str, "sha256": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise AcquireError(f"manifest {path} lacks columns {missing}")
    if manifest["file"].duplicated().any():
        dup = manifest.loc[manifest["file"].duplicated(), "file"].tolist()
        raise AcquireError(f"manifest {path} lists files twice: {dup}")
    bad = ~manifest["sha256"].str.fullmatch(r"[0-9a-f]{64}")
    if bad.any():
        raise AcquireError(
            f"manifest {path}: malformed SHA-256 for {manifest.loc[bad, 'file'].tolist()}"
        )
    return manifest


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(source: str | Path, manifest: pd.DataFrame) -> list[VerifiedFile]:
    """Check every manifest entry against the files under ``source``.

    All problems are collected and reported together in one :class:`AcquireError`
    (file, expected hash, actual hash, and what to do).
    """
    source = Path(source)
    if not source.is_dir():
        raise AcquireError(
            f"raw data source directory not found: {source}\n"
            "Set `acquire.source` in params.yaml to the directory that holds the raw files "
            "(default: data/raw, committed with the project)."
        )
    problems: list[str] = []
    verified: list[VerifiedFile] = []
    for entry in manifest.itertuples(index=False):
        path = source / entry.file
        if not path.is_file():
            problems.append(f"- {entry.file}: missing (looked for {path})")
            continue
        actual = sha256_of(path)
        if actual != entry.sha256:
            size = path.stat().st_size
            problems.append(
                f"- {entry.file}: checksum mismatch\n"
                f"    expected {entry.sha256} ({entry.bytes} bytes)\n"
                f"    actual   {actual} ({size} bytes)"
            )
            continue
        verified.append(
            VerifiedFile(entry.file, actual, int(entry.bytes), int(entry.rows), entry.study)
        )
    if problems:
        raise AcquireError(
            f"raw data in {source} do not match the checksum manifest:\n"
            + "\n".join(problems)
            + "\nWhat to do: restore the original files (git checkout -- data/raw, or download "
            "them again from the journals' Dataverse archives named in data/manifest.csv). "
            "Raw data are never edited; if a file was deliberately replaced, the manifest and "
            "every result downstream no longer describe the published study."
        )
    return verified


def acquire(source: str | Path, manifest_path: str | Path, dest: str | Path) -> list[VerifiedFile]:
    """Verify ``source`` against the manifest and copy the files into ``dest``.

    ``dest`` is replaced as a whole and only after every file has verified, so a failure
    leaves no partial output behind (an existing ``dest`` is removed first).
    """
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    manifest = read_manifest(manifest_path)
    verified = verify(source, manifest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it private
    try:
        for item in verified:
            target = staging / item.file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(source) / item.file, target)
            if sha256_of(target) != item.sha256:  # guard against a file changing mid-copy
                raise AcquireError(f"{item.file} changed while it was being copied; run again")
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return verified
