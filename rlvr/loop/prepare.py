"""Everything that can fail on bad input (recipe, plugins, data, verifier names, tokenizer), checked
before Ray starts."""

from __future__ import annotations

from dataclasses import dataclass

from rlvr.config import Recipe, RecipeError
from rlvr.data import DataError, filter_by_length, load_eval, load_sources
from rlvr.environments.base import EnvironmentConfigError
from rlvr.verifiers import PluginError, check_verifier_names, load_plugins


@dataclass
class Prepared:
    recipe: Recipe
    tokenizer: object
    train_rows: list[dict]
    eval_rows: list[dict]
    report: str


def prepare(recipe: Recipe) -> Prepared:
    """Load and check everything the run needs; raises RecipeError with one line."""
    from transformers import AutoTokenizer

    from rlvr.cluster.placement import PreflightError, check_layout

    try:
        load_plugins(recipe.verifiers.plugins)
        train_rows = load_sources(recipe.data.train, seed=recipe.data.seed, strict=recipe.data.strict)
        eval_rows = load_eval(recipe.data) if recipe.data.eval else []
        from rlvr.verifiers.registry import _REGISTRY
        from rlvr.verifiers.scorer import check_model_verifiers, model_name_map

        check_model_verifiers(recipe.judges, recipe.reward_models, set(_REGISTRY))
        known = model_name_map(recipe.judges, recipe.reward_models)
        for section, rows in (("train", train_rows), ("eval", eval_rows)):
            for i, src in enumerate(getattr(recipe.data, section)):
                # Every name a row of this source can use, the source's own default included, named by its field.
                if src.verifier:
                    check_verifier_names([src.verifier], also_known=known, field=f"data.{section}.{i}.verifier")
                names = {tuple(r["verifier"]) for r in rows if r["source"] == src.label}
                check_verifier_names(names, also_known=known, field=f"data.{section}.{i} ({src.label}) rows' "
                                                                     f"{src.verifier_key or 'verifier/dataset'} column")
        check_environments(recipe, [r["env"] for r in [*train_rows, *eval_rows] if r.get("env")])
        check_layout(recipe)  # colocation and transport rules no cluster could satisfy
    except (DataError, PluginError, PreflightError, EnvironmentConfigError) as e:
        raise RecipeError(str(e)) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir(recipe))
    except Exception as e:
        raise RecipeError(f"model.path: cannot load a tokenizer from {recipe.model.path} ({e})") from None
    report = str(getattr(train_rows, "report", ""))
    # vLLM refuses a prompt that fills its context (no room for one token): such rows are dropped here, train
    # and eval alike, with a count, rather than refused one by one by the engines (see rollout/refused_prompts).
    from rlvr.models import context_length

    context = context_length(model_dir(recipe), recipe.rollout.max_model_len)
    limit = min((x for x in (recipe.data.max_prompt_tokens, context - 1 if context else None) if x is not None), default=None)
    train_rows, dropped = filter_by_length(train_rows, tokenizer, limit)
    eval_rows, eval_dropped = filter_by_length(eval_rows, tokenizer, context - 1 if context else None)
    if dropped or eval_dropped:
        note = (f"dropped {dropped} train and {eval_dropped} eval row(s) whose prompt is over "
                f"{limit} tokens (data.max_prompt_tokens, or no room for an answer in the context of {context})")
        report = f"{report}\n{note}" if report else note
    if not train_rows:
        raise RecipeError("data.train: no usable rows after loading and filtering")
    return Prepared(recipe, tokenizer, list(train_rows), list(eval_rows), report)


def check_environments(recipe: Recipe, names: list[str]) -> None:
    """Environment plugins load, every named environment exists, and each builds with the recipe's options."""
    from rlvr.environments import get_environment, load_environment_plugins

    e = recipe.environments
    load_environment_plugins(e.plugins)
    for name in sorted(set(names) | set(e.options)):
        get_environment(name, **e.options.get(name, {}))  # unknown names and bad options fail here, in one line


def model_dir(recipe: Recipe) -> str:
    """The policy's local directory: model.path itself, or the snapshot of the Hub commit pinned in model.revision."""
    from rlvr.hub import local_path

    return local_path(recipe.model.path, recipe.model.revision)
