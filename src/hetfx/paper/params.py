"""Validated pipeline parameters (the contents of ``params.yaml``).

Every stage reads its section through :func:`validate`, so a mistyped key or an invalid
value stops the stage before it writes anything, with a message that names the key.
"""

from __future__ import annotations

from typing import Any, Literal

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


class Simulation(_Section):
    replicates: int = Field(100, ge=1, description="replicates per condition")
    root_seed: int = Field(12, ge=0, description="root of SeedSequence(root_seed).spawn(R)")
    n_obs: int = Field(2000, ge=100, description="observations per simulated data set")
    n_jobs: int = Field(-1, description="joblib workers (-1: all cores)")
    backend: Literal["fork", "loky", "dask", "threading", "sequential"] = "loky"
    scheduler_address: str | None = Field(None, description="Dask scheduler (implies dask)")
    small: bool = Field(False, description="small profile: at most 5 replicates")


class SimulationSensitivity(_Section):
    replicates: int = Field(100, ge=2, description="replicates per condition and DGP")
    baseline_sd: float = Field(0.3, gt=0, description="SD of the cells' baseline shifts")
    models: tuple[Literal["ols", "hierarchical", "hierarchical_fe", "hierarchical_pooled"], ...] = (
        Field(("ols", "hierarchical", "hierarchical_fe", "hierarchical_pooled"), min_length=1)
    )
    small: bool = Field(False, description="small profile: at most 5 replicates")


class ScaleSpec(_Section):
    """Prior of a standard deviation: ``{kind: half_student_t, nu: 3, scale: 2.5}``."""

    kind: Literal["half_student_t", "half_normal"]
    scale: float = Field(gt=0)
    nu: float = Field(default=3.0, gt=0)


class NormalSpec(_Section):
    kind: Literal["normal"]
    loc: float = 0.0
    scale: float = Field(gt=0)


class Gate(_Section):
    max_r_hat: float = Field(gt=1.0)
    min_ess_bulk: float = Field(gt=0)
    max_divergences: int = Field(ge=0)


class LambdaSettings(_Section):
    """Settings of a two-equation (lambda) model: M1, M2 and their variants.

    The pipeline passes this object itself to :func:`hetfx.paper.studies.fit_tomz_weeks`,
    which turns it into the library's :class:`hetfx.Priors`
    (:func:`hetfx.paper.studies.lambda_priors`) and engine settings.
    """

    engine: Literal["quadrature", "nutpie"]
    family: Literal["gaussian", "bernoulli"] = Field(
        "gaussian",
        description="likelihood: the published linear probability model, or a logit model "
        "(gamma_sd and beta_sd then on the log-odds scale; fitted by the qmc engine)",
    )
    gamma_sd: float = Field(gt=0)
    beta_sd: float = Field(gt=0)
    sigma: ScaleSpec
    sigma_theta: ScaleSpec
    target_accept: float = Field(gt=0, lt=1)
    main_effects: bool = Field(
        False, description="grouping variables' main effects in the outcome equation"
    )
    effect: Literal["saturated", "additive"] = Field(
        "saturated",
        description="M1's heterogeneity equation: the full factorial (published) "
        "or the additive conditions with a deviation per condition",
    )

    def updated(self, **changes: Any) -> LambdaSettings:
        """A copy with ``changes`` (names of fields, values of their types)."""
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise ValueError(f"unknown lambda-model settings {unknown}")
        return self.model_copy(update=changes)

    def with_logit(self, logit: LogitSettings) -> LambdaSettings:
        """The logit variant: Bernoulli family with the logit section's priors and settings."""
        return self.updated(
            family="bernoulli",
            gamma_sd=logit.gamma_sd,
            beta_sd=logit.beta_sd,
            target_accept=logit.target_accept,
        )


class VaryingSettings(_Section):
    """Settings of a varying-slopes model: A1 and Bush-Prather.

    The pipeline passes this object itself to :func:`hetfx.paper.studies.fit_tomz_weeks` and
    :func:`hetfx.paper.studies.fit_bush_prather` (:func:`hetfx.paper.studies.varying_settings`
    validates a mapping of some of its fields with defaults).
    """

    engine: Literal["auto", "quadrature", "qmc", "collapsed", "nutpie"]
    b_sd: float = Field(gt=0)
    intercept: Literal["flat"] | NormalSpec = "flat"
    sd: ScaleSpec
    sigma: ScaleSpec
    lkj_eta: float = Field(gt=0)
    target_accept: float = Field(gt=0, lt=1, description="NUTS engines (collapsed, nutpie)")
    max_treedepth: int = Field(default=10, ge=1, le=20, description="nutpie engine")
    qmc_points_log2: int = Field(
        default=14, ge=8, le=20, description="qmc engine: 2**k scrambled Sobol points"
    )
    controls: tuple[str, ...] | None = Field(
        None, description="A1: its additive controls (default: the paper's)"
    )

    def for_engine(self) -> dict[str, Any]:
        """The fields its engine reads (what a stage log prints): without the NUTS settings
        for the quadrature and qmc engines, without the qmc points for the others."""
        reads = {
            "target_accept": ("auto", "collapsed", "nutpie"),
            "max_treedepth": ("auto", "nutpie"),
            "qmc_points_log2": ("auto", "qmc"),
        }
        out = self.model_dump(exclude_none=True)
        return {k: v for k, v in out.items() if self.engine in reads.get(k, (self.engine,))}


class Models(_Section):
    codings: list[Literal["published", "corrected"]] = Field(min_length=1)
    seed: int = Field(ge=0)
    chains: int = Field(ge=1)
    draws: int = Field(ge=10)
    tune: int = Field(ge=0)
    gate: Gate
    m1: LambdaSettings
    m2: LambdaSettings
    a1: VaryingSettings
    bp: VaryingSettings


class LogitSettings(_Section):
    gamma_sd: float = Field(1.5, gt=0, description="prior SD of gamma (log-odds scale)")
    beta_sd: float = Field(1.5, gt=0, description="prior SD of beta (log-odds scale)")
    target_accept: float = Field(0.9, gt=0, lt=1)


class Robustness(_Section):
    coding: Literal["published", "corrected"] = "published"
    sigma_theta_priors: dict[str, ScaleSpec] = Field(
        min_length=1, description="priors of sigma_theta; the first is the default"
    )
    prior_variants: list[str] = Field(min_length=1)
    logit: LogitSettings = Field(default_factory=lambda: LogitSettings())


class Params(BaseModel):
    """The whole parameter file; sections not modelled yet are passed through."""

    model_config = ConfigDict(extra="allow", frozen=True)
    acquire: Acquire
    clean: Clean
    models: Models
    simulation: Simulation | None = None
    robustness: Robustness | None = None
    simulation_sensitivity: SimulationSensitivity | None = None


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
