"""The likelihood families of :func:`hetfx.fit`: what tells them apart, in one object each.

A :class:`Family` holds everything the front end needs to know about a likelihood: its name
and link, whether it has a residual SD (``sigma``), what its outcome and treatment must hold,
its cells' baselines (the default and those its engines fit), its engines (the default and
those allowed) and the engine function whose options a user may pass on. :func:`hetfx.fit`
and :mod:`hetfx.validation` ask the family instead of comparing strings, so a new family
(Poisson, ordinal, ...) is one more object here plus its engine.

==============  ===========================  ===========================================
family          :data:`GAUSSIAN`             :data:`BERNOULLI`
==============  ===========================  ===========================================
link            identity                     logit
``sigma``       yes                          no
outcome         any number                   0/1
treatment       0/1, two values or a dose    0/1
baselines       pooled (default),            additive (default), none
                correlated, fixed,
                additive, none
engines         quadrature (default), nutpie qmc (default), nutpie
effects         on the outcome's scale       average marginal effects (probability)
==============  ===========================  ===========================================

Examples
--------
>>> from hetfx.families import get_family
>>> fam = get_family("bernoulli")
>>> fam
Family('bernoulli', link='logit')
>>> fam.default_engine, fam.resolve_engine("auto"), fam.has_sigma
('qmc', 'qmc', False)
>>> get_family(fam) is fam
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetfx.validation import DesignError

__all__ = ["BERNOULLI", "FAMILIES", "GAUSSIAN", "Family", "get_family"]


@dataclass(frozen=True, repr=False)
class Family:
    """A likelihood family of the two-equation model.

    Attributes
    ----------
    name : str
        What ``family=`` takes (``"gaussian"``, ``"bernoulli"``).
    title : str
        The name in a sentence (``"Gaussian"``).
    link : str
        Link of the linear predictor (``"identity"``, ``"logit"``).
    has_sigma : bool
        Whether the likelihood has a residual SD (then its outcome must vary within some
        cell and arm, and ``priors.sigma`` is used).
    binary_outcome, binary_treatment : bool
        Whether the outcome and the treatment must hold only 0 and 1.
    default_baselines : str
        The cells' baselines of :func:`hetfx.fit` without ``baselines=``.
    baselines : tuple of str
        The baselines its engines fit.
    default_engine : str
        What ``engine="auto"`` runs.
    engines : tuple of str
        The engines that fit it.
    engine_functions : dict of str to str
        Per engine, ``"module:function"`` of the function whose keyword options
        :func:`hetfx.fit` passes on (checked by
        :func:`hetfx.validation.check_engine_options`).
    exact_engine : str or None
        The engine that computes its summaries exactly (no draws needed: ``draws=0``).
    effect_scale : str
        The scale of the group effects it reports.
    """

    name: str
    title: str
    link: str
    has_sigma: bool
    binary_outcome: bool
    binary_treatment: bool
    default_baselines: str
    baselines: tuple[str, ...]
    default_engine: str
    engines: tuple[str, ...]
    engine_functions: dict[str, str]
    exact_engine: str | None
    effect_scale: str

    def __repr__(self) -> str:
        return f"Family({self.name!r}, link={self.link!r})"

    def engine_function(self, engine: str | None = None) -> str:
        """``"module:function"`` of ``engine`` (``None`` or ``"auto"``: the default's)."""
        return self.engine_functions[self.resolve_engine(engine or "auto")]

    def resolve_engine(self, engine: str) -> str:
        """The engine that runs for ``engine=`` (``"auto"``: :attr:`default_engine`).

        Raises
        ------
        DesignError
            When the family's engines do not include ``engine``.
        """
        if engine == "auto":
            return self.default_engine
        if engine not in self.engines:
            allowed = " or ".join(repr(e) for e in self.engines)
            raise DesignError(
                f"family={self.name!r} is fitted by engine={allowed} only, got {engine!r}"
            )
        return engine

    def check_baselines(self, baselines: str) -> None:
        """Raise :class:`DesignError` when the family's engines do not fit ``baselines``."""
        if baselines in self.baselines:
            return
        others = [f.title for f in FAMILIES.values() if baselines in f.baselines]
        takes = "baselines=" + " or ".join(
            repr(b) + (" (its default)" if b == self.default_baselines else "")
            for b in self.baselines
        )
        raise DesignError(
            f"baselines={baselines!r} is fitted for the {' and '.join(others)} family only; "
            f"the {self.title} family takes {takes}"
        )

    def check_values(self, outcome: str, y: np.ndarray, treatment: str, t: np.ndarray) -> None:
        """Raise :class:`DesignError` when the treatment or the outcome holds values the
        family cannot model (the treatment is checked first)."""
        for name, values, binary in (
            (treatment, t, self.binary_treatment),
            (outcome, y, self.binary_outcome),
        ):
            values = np.asarray(values, dtype=float)
            if binary and not np.all(np.isin(values, (0.0, 1.0))):
                raise DesignError(
                    f"family={self.name!r} needs a 0/1 {name!r}; it holds "
                    f"{np.unique(values)[:6].tolist()}"
                )


#: The published linear probability model and any continuous outcome.
GAUSSIAN = Family(
    name="gaussian",
    title="Gaussian",
    link="identity",
    has_sigma=True,
    binary_outcome=False,
    binary_treatment=False,
    default_baselines="pooled",
    baselines=("pooled", "correlated", "fixed", "additive", "none"),
    default_engine="quadrature",
    engines=("quadrature", "nutpie"),
    engine_functions={
        "quadrature": "hetfx.models.pooled:fit_exact_lambda",
        "nutpie": "hetfx.models.lambda_model:fit_lambda_model",
    },
    exact_engine="quadrature",
    effect_scale="outcome",
)

#: A 0/1 outcome with a logit link; effects are average marginal effects.
BERNOULLI = Family(
    name="bernoulli",
    title="Bernoulli",
    link="logit",
    has_sigma=False,
    binary_outcome=True,
    binary_treatment=True,
    default_baselines="additive",
    baselines=("additive", "none"),
    default_engine="qmc",
    engines=("qmc", "nutpie"),
    engine_functions={
        "qmc": "hetfx.models.bernoulli:fit_bernoulli_lambda",
        "nutpie": "hetfx.models.bernoulli:fit_bernoulli_lambda",
    },
    exact_engine=None,
    effect_scale="probability",
)

#: Every family by name.
FAMILIES: dict[str, Family] = {f.name: f for f in (GAUSSIAN, BERNOULLI)}


def get_family(family: str | Family) -> Family:
    """The :class:`Family` of ``family=`` (a name or a family object).

    Raises
    ------
    DesignError
        For an unknown name or a value of another type.
    """
    if isinstance(family, Family):
        return family
    if isinstance(family, str) and family in FAMILIES:
        return FAMILIES[family]
    raise DesignError(f"family must be one of {tuple(FAMILIES)}, got {family!r}")
