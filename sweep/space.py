"""The search space as Tune domains, the search algorithm and the scheduler."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

from trainers import metrics as M

if TYPE_CHECKING:  # every trial's process imports this module (resolve_overrides): no config, no optuna
    from sweep.config import Domain, SearchConfig

# What the search algorithm maximises (search.objective). ASHA always stops on val/top1; each sets
# its own metric, so Tune's own `metric` stays unset and no result needs keys it does not carry.
OBJECTIVES = {"val_top1": M.VAL_TOP1, "soup_gain": M.SOUP_GAIN}
MODE = "max"
# off_or_uniform is two Tune parameters, so that every search algorithm (Optuna too) can learn it.
ON, VALUE = "#on", "#value"


def tune_domains(key: str, domain: Domain, grid: bool) -> dict[str, Any]:
    if domain.loguniform:
        return {key: tune.loguniform(*domain.loguniform)}
    if domain.uniform:
        return {key: tune.uniform(*domain.uniform)}
    if domain.randint:
        return {key: tune.randint(domain.randint[0], domain.randint[1] + 1)}  # Tune's high is exclusive
    if domain.off_or_uniform:
        return {key + ON: tune.choice([False, True]), key + VALUE: tune.uniform(*domain.off_or_uniform)}
    return {key: tune.grid_search(domain.choice) if grid else tune.choice(domain.choice)}


def param_space(search: SearchConfig) -> dict[str, Any]:
    """Flat dotted keys, as Tune passes them to the trial function ({"optim.lr": ...})."""
    space: dict[str, Any] = {}
    for key, domain in search.space.items():
        space.update(tune_domains(key, domain, search.algorithm == "grid"))
    return space


def resolve_overrides(sampled: dict[str, Any]) -> dict[str, Any]:
    """Tune's sampled parameters -> training-config overrides (joins off_or_uniform's two halves)."""
    overrides = {k: v for k, v in sampled.items() if not k.endswith((ON, VALUE))}
    for key in (k[: -len(ON)] for k in sampled if k.endswith(ON)):
        overrides[key] = sampled[key + VALUE] if sampled[key + ON] else 0.0
    return overrides


def search_algorithm(search: SearchConfig, max_concurrent: int) -> Searcher | BasicVariantGenerator:
    """The seeded search algorithm, limited to `max_concurrent` trials at once.

    The limit is set here because Tune ignores TuneConfig.max_concurrent_trials for a
    BasicVariantGenerator passed as search_alg: surplus trials would then wait forever on workers."""
    if search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(metric=OBJECTIVES[search.objective], mode=MODE, seed=search.seed),
                                  max_concurrent=max_concurrent)
    return BasicVariantGenerator(random_state=search.seed, max_concurrent=max_concurrent)


def scheduler(search: SearchConfig, max_epochs: int) -> TrialScheduler:
    """ASHA on val/top1 per epoch when configured; otherwise every trial runs all its epochs."""
    if search.asha is None:
        return FIFOScheduler()
    return ASHAScheduler(time_attr=M.EPOCH, metric=M.VAL_TOP1, mode=MODE, max_t=max_epochs,
                         grace_period=search.asha.grace_period,
                         reduction_factor=search.asha.reduction_factor)
