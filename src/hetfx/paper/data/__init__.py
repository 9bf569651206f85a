"""The paper's two data sets: acquisition of the raw files (:mod:`.acquire`, :mod:`.raw`),
cleaning and checks of Tomz and Weeks (2021) (:mod:`.tomz_weeks`) and Bush and Prather
(2020) (:mod:`.bush_prather`), and their summaries (:mod:`.summaries`)."""
