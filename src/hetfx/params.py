"""Validated pipeline parameters (the contents of ``params.yaml``).

Every stage reads its section through :func:`validate`, so a mistyped key or an invalid
value stops the stage before it writes anything, with a message that names the key.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Acquire(_Section):
    source: str = Field(min_length=1, description="directory holding the raw files")


class CleanStudy(_Section):
    file: str = Field(min_length=1, description="raw file, relative to the acquired directory")


class Clean(_Section):
    tomz_weeks: CleanStudy
    bush_prather: CleanStudy


class Params(BaseModel):
    """The whole parameter file; sections not modelled yet are passed through."""

    model_config = ConfigDict(extra="allow", frozen=True)
    acquire: Acquire
    clean: Clean


class ParamsError(ValueError):
    """The parameter file is invalid."""


def validate(raw: Any, origin: str = "params.yaml") -> Params:
    """Validate a parsed parameter mapping; raise :class:`ParamsError` naming each bad key."""
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ParamsError(f"{origin}: expected a mapping of stage sections, got {kind}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"- {'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        ]
        raise ParamsError(f"{origin} is invalid:\n" + "\n".join(lines)) from None
