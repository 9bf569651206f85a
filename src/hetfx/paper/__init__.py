"""The paper's own code: its two studies, report, figures, simulation design and audit.

Everything here is the first user of the reusable core (:mod:`hetfx`): the study definitions
(:mod:`hetfx.paper.studies`), the cleaning of the raw files (:mod:`hetfx.paper.data`), the
simulation study (:mod:`hetfx.paper.simulation`), the robustness checks, verdict and claims
register (:mod:`hetfx.paper.robustness`, :mod:`hetfx.paper.verdict`,
:mod:`hetfx.paper.claims`), the manuscript's numbers, figures
and rendering (:mod:`hetfx.paper.report`, :mod:`hetfx.paper.figures`,
:mod:`hetfx.paper.render`), the pipeline's parameters (:mod:`hetfx.paper.params`) and
``make verify`` (:mod:`hetfx.paper.verify`). None of it is needed to fit the model to other data.
"""
