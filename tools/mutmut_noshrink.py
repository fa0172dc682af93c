"""Pytest plugin for mutant runs (`-p tools.mutmut_noshrink`): hypothesis stops at the first failing example, with
no shrinking and no example database, so a killed mutant costs one failure rather than a minute or more of shrinking
(and one mutant's examples are not replayed for the next)."""

from hypothesis import Phase, settings


settings.register_profile("mutants", phases=[Phase.explicit, Phase.generate], database=None)
settings.load_profile("mutants")
