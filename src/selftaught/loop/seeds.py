"""Seeds of a run's language-model requests and sandboxed runs, reproducible from the run's seed."""

from __future__ import annotations

import random


class SeedSequence:
    """Seeds for language-model requests and sandboxed runs, reproducible from the run's seed."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._step: int | None = None
        self._generator = random.Random(seed)

    def __call__(self) -> int:
        return self._generator.randrange(2**31)

    def restart(self, step: int) -> None:
        """Seeds of step `step` depend only on the run's seed and the step, so a resumed run can start at any step."""
        self._step = step
        self._generator = random.Random(f"{self._seed}/{step}")

    def derived(self, key: str) -> SeedSequence:
        """Seeds of one thing of this step (a candidate, by its hash): the same whenever, and in whatever order, it is asked for."""
        derived = SeedSequence(self._seed)
        derived._generator = random.Random(f"{self._seed}/{self._step}/{key}")
        return derived
