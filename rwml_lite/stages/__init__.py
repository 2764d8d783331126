"""The pipeline's stages, in the order `train` runs them: collect -> build -> filter -> rwml -> wm_sft ->
policy -> eval (report.py writes eval's report).

Each stage is one module named after it, declaring what rwml_lite/pipeline.py needs to run, key, skip,
resume and redo it:
    NAME                     the stage's name in recipes (`stages`), the manifest and `--redo`
    KEYED_BY                 the recipe fields (or whole sections) its result depends on, besides the stages
                             before it; a stage whose fields depend on the recipe adds `keyed_by(recipe)`
    FORMAT (optional)        how this version computes it, where that changed in a way old artifacts do not show
    outputs(folder)          the paths it writes (moved by --redo, linked between a study's variants)
    run(recipe, folder)      does the work, returns the summary kept in the manifest
The modules import their heavy dependencies (torch, the trainers, the environments) when they run.
"""

from __future__ import annotations

from types import ModuleType

from rwml_lite.stages import build, collect, eval, filter, policy, rwml, wm_sft

ORDER: tuple[ModuleType, ...] = (collect, build, filter, rwml, wm_sft, policy, eval)
STAGES: list[str] = [stage.NAME for stage in ORDER]
BY_NAME: dict[str, ModuleType] = {stage.NAME: stage for stage in ORDER}
