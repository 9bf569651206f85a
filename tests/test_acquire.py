"""Acquisition: every raw file is verified against the manifest, or nothing is written."""

import pandas as pd
import pytest

from conftest import MANIFEST, RAW, TW_FILE
from hetfx.paper.data.acquire import AcquireError, acquire, read_manifest, sha256_of, verify


def test_manifest_matches_committed_raw_files():
    manifest = read_manifest(MANIFEST)
    assert len(manifest) == 3
    for entry in manifest.itertuples():
        path = RAW / entry.file
        assert sha256_of(path) == entry.sha256
        assert path.stat().st_size == entry.bytes
    assert manifest["citation"].str.contains("Tomz").any()
    assert manifest["citation"].str.contains("Bush").any()


def test_acquire_copies_verified_files(project):
    dest = project / "data" / "acquired"
    verified = acquire(project / "data" / "raw", project / "data" / "manifest.csv", dest)
    assert sorted(v.file for v in verified) == sorted(read_manifest(MANIFEST)["file"])
    for item in verified:
        assert sha256_of(dest / item.file) == item.sha256


def _acquire_fails(project, match):
    dest = project / "data" / "acquired"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("from an earlier run")
    with pytest.raises(AcquireError, match=match) as info:
        acquire(project / "data" / "raw", project / "data" / "manifest.csv", dest)
    assert not dest.exists(), "a failed acquire must leave no output behind"
    assert not list((project / "data").glob(".acquired-*")), "staging directory left behind"
    return str(info.value)


def test_changed_checksum_names_file_and_both_hashes(project):
    path = project / "data" / "raw" / TW_FILE
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    message = _acquire_fails(project, "checksum mismatch")
    expected = read_manifest(MANIFEST).set_index("file").loc[TW_FILE, "sha256"]
    assert TW_FILE in message and expected in message and sha256_of(path) in message
    assert "What to do" in message


def test_missing_file(project):
    (project / "data" / "raw" / TW_FILE).unlink()
    message = _acquire_fails(project, "missing")
    assert TW_FILE in message


def test_truncated_file(project):
    path = project / "data" / "raw" / TW_FILE
    path.write_bytes(path.read_bytes()[:1000])
    message = _acquire_fails(project, "checksum mismatch")
    assert "1000 bytes" in message


def test_missing_source_directory(tmp_path):
    with pytest.raises(AcquireError, match="source directory not found"):
        verify(tmp_path / "nowhere", read_manifest(MANIFEST))


def test_malformed_manifest(tmp_path):
    bad = pd.read_csv(MANIFEST).drop(columns="sha256")
    bad.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(AcquireError, match="lacks columns"):
        read_manifest(tmp_path / "manifest.csv")
