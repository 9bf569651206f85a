"""One prior type for every coefficient and scale of the two-equation model.

A :class:`Prior` is a family with its parameters; a :class:`Priors` bundle assigns one to each
part of the model:

==============  ===============================  ==========================================
part            parameter                        default (as brms / the paper)
==============  ===============================  ==========================================
``effect``      gamma (heterogeneity equation)   ``Prior.normal(1)``
``control``     beta (outcome equation)          ``Prior.normal(1)``
``intercept``   beta of the ``Intercept`` column same as ``control`` unless given
``sigma``       residual SD (Gaussian only)      ``Prior.half_student_t(3, 2.5)``
``sigma_theta`` SD of the group deviations       ``Prior.half_student_t(3, 2.5)``
``sigma_alpha`` SD of the cells' baselines        ``Prior.half_student_t(3, 2.5)``
``lkj_eta``     LKJ shape of rho (correlated)    ``1`` (uniform correlation, brms ``lkj(1)``)
==============  ===============================  ==========================================

These are the paper's priors, for a 0/1 outcome. :func:`hetfx.fit` without ``priors=`` uses
:meth:`Priors.scaled_to` instead (Gaussian family): flat priors on the outcome equation and
priors on the rest scaled to the outcome's and the treatment's standard deviations.

Coefficients take ``normal`` or ``flat`` priors (``flat`` is approximated by a normal with
SD 1e6, :data:`FLAT_SD`, which no data set on a sane scale can tell apart); scales take
``half_normal`` or ``half_student_t`` priors.

Examples
--------
>>> p = Priors(sigma_theta=Prior.half_normal(0.5))
>>> p.sigma_theta
Prior.half_normal(0.5)
>>> kw = p.lambda_kwargs(["Intercept", "age"])
>>> kw["gamma_sd"], kw["sigma_theta_prior"].kind
(1.0, 'half_normal')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from hetfx.models.gaussian import ScalePrior

__all__ = ["FLAT_SD", "Prior", "Priors"]

#: Prior SD standing in for a flat prior on a coefficient.
FLAT_SD = 1e6

_COEF = ("normal", "flat")
_SCALE = ("half_normal", "half_student_t")


@dataclasses.dataclass(frozen=True)
class Prior:
    """A prior distribution: ``normal``, ``flat``, ``half_normal`` or ``half_student_t``.

    Build it with the class methods, not the constructor.

    Parameters
    ----------
    family : str
        One of ``normal``, ``flat``, ``half_normal``, ``half_student_t``.
    scale : float
        SD (``normal``) or scale (half families); NaN for ``flat``.
    nu : float
        Degrees of freedom of ``half_student_t`` (NaN otherwise).

    Examples
    --------
    >>> Prior.half_student_t(3, 2.5).to_scale_prior()
    ScalePrior(kind='half_student_t', scale=2.5, nu=3.0)
    >>> Prior.normal(0.5).sd
    0.5
    """

    family: str
    scale: float = math.nan
    nu: float = math.nan

    def __post_init__(self) -> None:
        if self.family not in _COEF + _SCALE:
            raise ValueError(
                f"unknown prior family {self.family!r}; use Prior.normal, "
                "Prior.flat, Prior.half_normal or Prior.half_student_t"
            )
        if self.family != "flat" and not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(
                f"{self.family} prior needs a positive finite scale, got {self.scale!r}"
            )
        if self.family == "half_student_t" and not (np.isfinite(self.nu) and self.nu > 0):
            raise ValueError(f"half_student_t prior needs nu > 0, got {self.nu!r}")

    @classmethod
    def normal(cls, sd: float) -> Prior:
        """Normal(0, sd) prior of a coefficient."""
        return cls("normal", float(sd))

    @classmethod
    def flat(cls) -> Prior:
        """Flat (improper uniform) prior of a coefficient, approximated by N(0, FLAT_SD)."""
        return cls("flat")

    @classmethod
    def half_normal(cls, scale: float) -> Prior:
        """Half-normal(0, scale) prior of a standard deviation."""
        return cls("half_normal", float(scale))

    @classmethod
    def half_student_t(cls, nu: float, scale: float) -> Prior:
        """Half-Student-t(nu, 0, scale) prior of a standard deviation (brms: nu=3, 2.5)."""
        return cls("half_student_t", float(scale), float(nu))

    @classmethod
    def brms_default(cls) -> Prior:
        """brms's default prior of a standard deviation, half-Student-t(3, 0, 2.5)
        (:meth:`hetfx.models.gaussian.ScalePrior.brms_default`)."""
        return cls.from_spec(ScalePrior.brms_default())

    @classmethod
    def from_spec(cls, spec) -> Prior:
        """A prior from its ``params.yaml`` form, a :class:`ScalePrior`, or a Prior.

        ``{"kind": "half_normal", "scale": 1}``, ``{"kind": "half_student_t", "scale": 2.5,
        "nu": 3}``, ``{"kind": "normal", "scale": 1}`` or ``"flat"``.

        Examples
        --------
        >>> Prior.from_spec({"kind": "half_student_t", "scale": 2.5, "nu": 3})
        Prior.half_student_t(3, 2.5)
        >>> Prior.from_spec("flat")
        Prior.flat()
        """
        if isinstance(spec, Prior):
            return spec
        if isinstance(spec, ScalePrior):
            return cls(
                spec.kind,
                float(spec.scale),
                float(spec.nu) if spec.kind == "half_student_t" else math.nan,
            )
        if isinstance(spec, str):
            if spec != "flat":
                raise ValueError(f"a prior given as text must be 'flat', got {spec!r}")
            return cls.flat()
        kind = spec.get("kind", spec.get("family"))
        if kind == "flat":
            return cls.flat()
        if kind == "half_student_t":
            return cls.half_student_t(spec.get("nu", 3.0), spec["scale"])
        if kind in ("normal", "half_normal"):
            return cls(kind, float(spec.get("scale", spec.get("sd", math.nan))))
        raise ValueError(f"unknown prior kind {kind!r} in {dict(spec)!r}")

    @property
    def is_scale(self) -> bool:
        """True for priors of standard deviations."""
        return self.family in _SCALE

    @property
    def sd(self) -> float:
        """Prior SD of a coefficient (``FLAT_SD`` for ``flat``)."""
        if self.is_scale:
            raise ValueError(
                f"a {self.family} prior is for a standard deviation, not a "
                "coefficient; use Prior.normal(sd) or Prior.flat()"
            )
        return FLAT_SD if self.family == "flat" else self.scale

    def to_scale_prior(self) -> ScalePrior:
        """The engine's :class:`~hetfx.models.gaussian.ScalePrior` of a standard deviation."""
        if not self.is_scale:
            raise ValueError(
                f"a {self.family} prior is for a coefficient, not a standard "
                "deviation; use Prior.half_normal or Prior.half_student_t"
            )
        if self.family == "half_normal":
            return ScalePrior("half_normal", self.scale)
        return ScalePrior("half_student_t", self.scale, self.nu)

    def __repr__(self) -> str:
        if self.family == "flat":
            return "Prior.flat()"
        if self.family == "half_student_t":
            return f"Prior.half_student_t({self.nu:g}, {self.scale:g})"
        return f"Prior.{self.family}({self.scale:g})"


@dataclasses.dataclass(frozen=True)
class Priors:
    """The priors of one fit (see the module docstring for the parts and defaults).

    Parameters
    ----------
    effect : Prior
        Prior of every gamma (heterogeneity-equation coefficient).
    control : Prior
        Prior of every beta (outcome-equation coefficient).
    intercept : Prior, optional
        Prior of the outcome equation's ``Intercept`` (default: ``control``).
    sigma : Prior
        Residual SD (Gaussian family).
    sigma_theta : Prior
        SD of the group deviations theta.
    sigma_alpha : Prior
        SD of the cells' baselines (``baselines="pooled"`` or ``"correlated"``).
    lkj_eta : float
        Shape of the LKJ prior of the correlation of each cell's baseline and effect
        (``baselines="correlated"``; 1: uniform on (-1, 1), as brms's default ``lkj(1)``).

    Examples
    --------
    Tighter priors on the effects' coefficients and on their spread; the parts not named keep
    their defaults:

    >>> import hetfx
    >>> priors = hetfx.Priors(effect=hetfx.Prior.normal(0.5),
    ...                       sigma_theta=hetfx.Prior.half_normal(0.3))
    >>> for part, prior in priors.describe().items():
    ...     print(f"{part:12} {prior}")
    effect       Prior.normal(0.5)
    control      Prior.normal(1)
    sigma        Prior.half_student_t(3, 2.5)
    sigma_theta  Prior.half_normal(0.3)

    Pass them to :func:`hetfx.fit` as ``priors=priors``. A prior of the wrong kind is refused:

    >>> hetfx.Priors(sigma=hetfx.Prior.normal(1))
    Traceback (most recent call last):
    ...
    ValueError: Priors.sigma is a standard deviation; Prior.normal(1) does not fit it
    """

    effect: Prior = Prior.normal(1.0)
    control: Prior = Prior.normal(1.0)
    intercept: Prior | None = None
    sigma: Prior = Prior.brms_default()
    sigma_theta: Prior = Prior.brms_default()
    sigma_alpha: Prior = Prior.brms_default()
    lkj_eta: float = 1.0
    #: How the priors were set (``""``: given; else the data scales they were derived from).
    origin: str = dataclasses.field(default="", compare=False)

    def __post_init__(self) -> None:
        eta = self.lkj_eta
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not eta > 0:
            raise ValueError(f"Priors.lkj_eta must be a positive number, got {eta!r}")
        for part in ("effect", "control", "intercept", "sigma", "sigma_theta", "sigma_alpha"):
            p = getattr(self, part)
            if part == "intercept" and p is None:
                continue
            if not isinstance(p, Prior):
                raise TypeError(f"Priors.{part} must be a hetfx.Prior, got {type(p).__name__}")
            want_scale = part in ("sigma", "sigma_theta", "sigma_alpha")
            if p.is_scale != want_scale:
                kind = "standard deviation" if want_scale else "coefficient"
                raise ValueError(f"Priors.{part} is a {kind}; {p!r} does not fit it")

    @classmethod
    def scaled_to(cls, y: np.ndarray, treat: np.ndarray) -> Priors:
        """The default priors of :func:`hetfx.fit` for the Gaussian family, scaled to the data.

        In the spirit of brms and bambi: flat priors on the outcome equation's coefficients
        (intercept, controls, main effects), so a shift of the outcome is absorbed exactly;
        ``gamma ~ N(0, 2.5 s_y / s_T)`` (bambi's slopes); half-Student-t(3) priors with scale
        ``s_y`` on ``sigma`` and ``sigma_alpha`` and ``s_y / s_T`` on ``sigma_theta``, with
        ``s_y`` and ``s_T`` the standard deviations of the outcome and the treatment (1 where
        one is 0). The standard deviation, not brms's MAD, because a 0/1 outcome's MAD can be
        0. Fitting ``a y + b`` then gives ``a`` times the effects.

        Examples
        --------
        >>> import numpy as np
        >>> p = Priors.scaled_to(np.array([0.0, 10, 20, 30]), np.array([0.0, 1, 0, 1]))
        >>> p.effect, p.control, p.sigma_theta
        (Prior.normal(55.9017), Prior.flat(), Prior.half_student_t(3, 22.3607))
        """
        sy = float(np.std(y)) or 1.0
        st = float(np.std(treat)) or 1.0
        return cls(
            effect=Prior.normal(2.5 * sy / st),
            control=Prior.flat(),
            intercept=Prior.flat(),
            sigma=Prior.half_student_t(3, sy),
            sigma_theta=Prior.half_student_t(3, sy / st),
            sigma_alpha=Prior.half_student_t(3, sy),
            origin=f"scaled to the data: sd(outcome) = {sy:.4g}, sd(treatment) = {st:.4g}",
        )

    def rescaled(self, factor: float) -> Priors:
        """The same priors for the outcome multiplied by ``factor`` (flat ones stay flat)."""

        def scale(p: Prior | None) -> Prior | None:
            if p is None or p.family == "flat":
                return p
            return dataclasses.replace(p, scale=p.scale * factor)

        parts = ("effect", "control", "intercept", "sigma", "sigma_theta", "sigma_alpha")
        return dataclasses.replace(self, **{k: scale(getattr(self, k)) for k in parts})

    def beta_sd(self, control_names: Sequence[str], flat: float = FLAT_SD) -> np.ndarray:
        """Prior SD of each outcome-equation coefficient, in the order of ``control_names``
        (``flat`` stands for a flat prior: :data:`FLAT_SD`, or ``inf`` for the exact
        engines, which take it as zero prior precision)."""

        def sd(p: Prior) -> float:
            return flat if p.family == "flat" else p.sd

        out = np.full(len(control_names), sd(self.control))
        if self.intercept is not None:
            for j, c in enumerate(control_names):
                if c == "Intercept":
                    out[j] = sd(self.intercept)
        return out

    def lambda_kwargs(self, control_names: Sequence[str], flat: float = FLAT_SD) -> dict:
        """Keyword arguments of :func:`hetfx.models.fit_lambda_model`."""
        return {
            "gamma_sd": float(self.effect.sd),
            "beta_sd": self.beta_sd(control_names, flat),
            "sigma_prior": self.sigma.to_scale_prior(),
            "sigma_theta_prior": self.sigma_theta.to_scale_prior(),
        }

    def describe(self) -> dict[str, str]:
        """Part name -> prior, as text (for summaries)."""
        out = {"effect": repr(self.effect), "control": repr(self.control)}
        if self.intercept is not None:
            out["intercept"] = repr(self.intercept)
        out["sigma"] = repr(self.sigma)
        out["sigma_theta"] = repr(self.sigma_theta)
        return out
