"""The search space as Tune domains, and the search algorithm."""
from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from sweep.config import Domain, SearchConfig
from trainers import metrics as M

SEARCH_METRIC, SEARCH_MODE = M.VAL_TOP1, "max"


def tune_domain(domain: Domain) -> Any:
    if domain.loguniform:
        return tune.loguniform(*domain.loguniform)
    if domain.uniform:
        return tune.uniform(*domain.uniform)
    if domain.randint:
        return tune.randint(domain.randint[0], domain.randint[1] + 1)  # Tune's upper bound is exclusive
    return tune.choice(domain.choice)


def param_space(search: SearchConfig) -> dict[str, Any]:
    """Flat dotted keys, as Tune passes them to the trial function ({"optim.lr": ...})."""
    return {key: tune_domain(domain) for key, domain in search.space.items()}


def search_algorithm(search: SearchConfig, max_concurrent: int) -> Searcher | BasicVariantGenerator:
    """The seeded search algorithm, limited to `max_concurrent` trials at once.

    The limit is set here because Tune ignores TuneConfig.max_concurrent_trials for a
    BasicVariantGenerator passed as search_alg: surplus trials would then wait forever on workers."""
    if search.algorithm == "optuna":
        return ConcurrencyLimiter(OptunaSearch(metric=SEARCH_METRIC, mode=SEARCH_MODE, seed=search.seed),
                                  max_concurrent=max_concurrent)
    return BasicVariantGenerator(random_state=search.seed, max_concurrent=max_concurrent)
