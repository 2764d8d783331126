"""Full fine-tuning (`model.lora: null`), the paper's setting: every weight trains, each trained stage saves
the whole model, and the stages after it (the policy stage, eval, a resumed run) load that model."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_recipe
from rwml_lite.config import load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.models.hf import is_adapter, load_policy, policy_model
from rwml_lite.train.policy_checkpoints import load_weights

STAGES = ["collect", "build", "filter", "rwml", "policy", "eval"]
POLICY = {"start": "rwml", "tasks_per_step": 2, "group_size": 2, "max_steps": 2, "episode_max_steps": 3,
          "learning_rate": 0.001, "micro_batch_size": 4, "save_steps": 1, "invalid_action_penalty": 0.1}  # fmt: skip


def weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


@pytest.mark.slow
def test_every_weight_trains_and_later_stages_load_the_saved_models(tmp_path, tiny_qwen3, java):
    from rwml_lite.pipeline import run

    recipe = load_recipe(tiny_recipe(tmp_path, tiny_qwen3, STAGES, model={"lora": None}, policy=POLICY))
    folder = run(recipe, STAGES)
    base = weights(load_policy(recipe.model)[0])
    for stage in ("filter", "rwml", "policy"):
        saved = folder.adapter(stage)
        assert not is_adapter(saved) and (saved / "model.safetensors").exists(), stage
    rwml = load_file(folder.adapter("rwml") / "model.safetensors")
    changed = [name for name, w in rwml.items() if not torch.equal(w, base[name])]
    assert len(changed) == len(rwml)  # every saved weight moved, not an adapter's few
    assert all(torch.equal(w, base[n]) for n, w in weights(load_policy(recipe.model)[0]).items())  # base untouched

    # eval and the policy stage load the whole model a stage saved, the policy stage with every weight trainable
    evaluated = weights(load_policy(recipe.model, folder.adapter("rwml"))[0])
    assert all(torch.equal(evaluated[name], w) for name, w in rwml.items())
    model, _ = policy_model(recipe.model, recipe.seed, folder.adapter("rwml"))
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(model.state_dict()[name], w) for name, w in rwml.items())
    for variant in ("base", "rwml", "policy"):
        assert (folder.eval(f"{variant}.json")).exists()

    # a resumed policy stage puts the checkpoint's weights into the freshly loaded model
    checkpoint = folder.checkpoints("policy") / "checkpoint-1"
    fresh, _ = policy_model(recipe.model, recipe.seed, folder.adapter("rwml"))
    load_weights(fresh, checkpoint)
    saved = load_file(checkpoint / "model.safetensors")
    assert all(torch.equal(fresh.state_dict()[name], w) for name, w in saved.items())


@pytest.mark.parametrize(
    "change, named",
    [
        ("model.backend=unsloth", "model.backend=unsloth"),
        ("model.load_in_4bit=true", "model.load_in_4bit"),
        ("model.server.url=http://localhost:8000", "model.server"),
    ],
)
def test_full_fine_tuning_is_refused_where_only_an_adapter_can_go(tmp_path, change, named):
    recipe = tiny_recipe(tmp_path, tmp_path)
    with pytest.raises(RwmlError, match=rf"model.lora is null \(full fine-tuning\).*cannot go with {named}"):
        load_recipe(recipe, ["model.lora=null", change])
