"""The `rwml-lite` command: train, collect, eval, study, plan, selftest, recipes, export, doctor.

Every command takes a recipe (a path, or the name of a shipped recipe) followed by optional
`key.sub=value` overrides, e.g. `rwml-lite train demo_cpu grpo.max_steps=2 run.dir=runs/try`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rwml_lite.distributed import is_main
from rwml_lite.errors import RwmlError
from rwml_lite.plan.throughput import GPU_GBS, PCIE_GBS, TRAIN_TFLOPS

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
recipes_app = typer.Typer(help="List the shipped recipes, or show one with every field described.")
app.add_typer(recipes_app, name="recipes")
export_app = typer.Typer(no_args_is_help=True, help="Hand a run's training set to another trainer.")
app.add_typer(export_app, name="export")
console = Console()

RecipeArg = Annotated[
    str, typer.Argument(help="Recipe file, or the name of a shipped recipe (see `rwml-lite recipes`).")
]
Overrides = Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides, e.g. grpo.learning_rate=5e-6.")]

FIELDS_HINT = "Every recipe field and its meaning: `rwml-lite recipes show NAME`."


def _friendly(command):
    """Print RwmlError as one paragraph (no traceback) and exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RwmlError as e:
            Console(stderr=True).print(f"[bold red]error:[/bold red] {e}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def shipped_recipes_dir() -> Path:
    """recipes/ beside the package (a source checkout), else ./recipes."""
    beside = Path(__file__).resolve().parent.parent / "recipes"
    return beside if beside.is_dir() else Path.cwd() / "recipes"


def _recipe_path(recipe: str) -> Path:
    path = Path(recipe)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    return shipped_recipes_dir() / f"{recipe}.yaml"


def _quiet_libraries() -> None:
    """Keep the console for our progress bars: library warnings that the user cannot act on go."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "pip install kernels" for 4-bit CPU GEMMs we never run
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars, once per stage
    datasets.disable_progress_bars()


def _load(recipe: str, overrides: list[str] | None):
    from rwml_lite.config import load_recipe, recipe_warnings

    loaded = load_recipe(_recipe_path(recipe), overrides or [])
    for warning in recipe_warnings(loaded) if is_main() else []:
        Console(stderr=True).print(f"[bold yellow]warning:[/bold yellow] {warning}", highlight=False)
    return loaded


def _run(recipe: str, overrides: list[str] | None, stages, redo: str | None) -> None:
    """Run `stages` of the recipe: a list, a function of the loaded recipe that gives one, or None for the recipe's
    own. Nothing may import torch before `prepare_backend`."""
    from rwml_lite.models import prepare_backend

    loaded = _load(recipe, overrides)
    prepare_backend(loaded.model)  # before torch and transformers are imported: Unsloth must come first
    from rwml_lite.pipeline import run

    _check_fits(loaded)
    _quiet_libraries()
    from rwml_lite.selftest import measurements, stage_forecast

    measured = measurements(_recipe_path(recipe).stem)
    forecast = stage_forecast(measured)
    if forecast:
        console.print(
            f"Forecast from {measured}: about {sum(forecast.values()) / 60:,.0f} min for the recipe's stages."
        )
    folder = run(loaded, stages(loaded) if callable(stages) else loaded.stages if stages is None else stages, redo,
                 forecast)  # fmt: skip
    if not is_main():  # under accelerate launch the main process says it
        return
    if folder.report.exists():
        _print_results(folder.report)
    console.print(f"Run folder: {folder.root}")


def _print_results(document: Path) -> None:
    """The results of a report or study on the console (its tables, up to its first plot), then where it is."""
    from rich.markdown import Markdown

    lines = document.read_text().splitlines()
    shown = next((i for i, line in enumerate(lines) if line.startswith("![")), len(lines))
    console.print(Markdown("\n".join(lines[:shown])))
    console.print(f"\nThe whole {'study' if document.name == 'study.md' else 'report'}, with plots: {document}")


def _check_fits(loaded) -> None:
    """On a GPU, refuse a recipe whose memory plan exceeds it before any model is loaded."""
    import torch

    if not torch.cuda.is_available():
        return
    from rwml_lite.plan import estimate, host_ram_warning, refusal

    gpu_gib = torch.cuda.get_device_properties(0).total_memory / 1024**3
    plan = estimate(loaded, gpu_gib)
    if not plan.fits:
        raise RwmlError(refusal(plan))
    ram = _memory_info()
    warning = host_ram_warning(plan, ram["MemAvailable"], ram["MemTotal"]) if ram else None
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def _memory_info() -> dict[str, float] | None:
    """/proc/meminfo in GiB (Linux, where GPU runs happen); None elsewhere."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    fields = (line.split(":", 1) for line in lines)
    return {name: int(value.split()[0]) / 1024**2 for name, value in fields}  # kB


def _stated_gpu_gib(path: Path) -> float | None:
    """The GPU size in a recipe's `# Hardware:` header ("one 24 GB GPU" -> 24)."""
    import re

    found = re.search(r"(\d+)\s*GB GPU", _header(path).get("Hardware", "")) if path.is_file() else None
    return float(found.group(1)) if found else None


def _stated_processes(path: Path) -> int | None:
    """The GPU count in a recipe's `# Hardware:` header ("8 x 141 GB GPU" -> 8): one process each."""
    import re

    found = re.search(r"(\d+)\s*x\s*\d+\s*GB GPU", _header(path).get("Hardware", "")) if path.is_file() else None
    return int(found.group(1)) if found else None


@app.command(
    help="Estimate the recipe's GPU memory, part by part and phase by phase, and whether it fits "
    "(exit status 1 when it does not)."
)
@_friendly
def plan(
    recipe: RecipeArg,
    overrides: Overrides = None,
    gpu_gb: Annotated[
        float | None,
        typer.Option(help="GPU memory in GB (default: this machine's GPU, else the recipe's Hardware header)."),
    ] = None,
    anchors: Annotated[
        bool, typer.Option(help="Also print the estimate's error against published and measured peaks.")
    ] = False,
    pcie_gbs: Annotated[
        float,
        typer.Option(help="Host-to-GPU copy rate in GB/s (PCIe 3.0 x16 ~12, 4.0 x16 ~25, 5.0 x16 ~50).", min=0.1),
    ] = PCIE_GBS,
    gpu_gbs: Annotated[
        float, typer.Option(help="GPU memory bandwidth in GB/s (RTX 3090: 936, RTX 4090: 1008, H100: 3350).", min=1)
    ] = GPU_GBS,
    train_tflops: Annotated[
        float,
        typer.Option(
            help="bf16 TFLOP/s a training step reaches (~40 % of the card's dense peak: RTX 3090 71, RTX 4090 165, "
            "A6000 155, A100 312, H100 989).",
            min=0.1,
        ),
    ] = TRAIN_TFLOPS,
    processes: Annotated[
        int | None,
        typer.Option(
            help="Trainer processes, one GPU each (accelerate launch --num_processes; default: the recipe's "
            "Hardware header, else 1); the plan is per GPU.",
            min=1,
        ),
    ] = None,
    server_gpu_gb: Annotated[
        float | None,
        typer.Option(help="With model.server: GPU memory of the vLLM server's GPU, to size its KV cache.", min=1),
    ] = None,
) -> None:
    import torch

    from rwml_lite.plan import estimate, table
    from rwml_lite.plan.throughput import bandwidth, time_tables

    loaded = _load(recipe, overrides)
    if gpu_gb is None and torch.cuda.is_available():
        gpu_gb = torch.cuda.get_device_properties(0).total_memory / 1024**3
    gpu_gb = gpu_gb or _stated_gpu_gib(_recipe_path(recipe))
    if gpu_gb is None and loaded.model.backend == "unsloth":
        raise RwmlError(
            "No GPU here and the recipe's header names no size (`# Hardware: one 24 GB GPU`): pass --gpu-gb N."
        )
    processes = processes or _stated_processes(_recipe_path(recipe)) or 1
    estimated = estimate(loaded, gpu_gb or 0.0, processes)
    each = f" (each of {processes} GPUs)" if processes > 1 else ""
    console.print(table(estimated, f"{_recipe_path(recipe).name}: memory by phase{each} (GiB)"))
    for note in estimated.notes:
        console.print(note, highlight=False)
    _verdict(loaded, estimated, gpu_gb, server_gpu_gb)
    if loaded.model.backend == "unsloth":  # the GPU path: how long its stages take at these bandwidths
        for times in time_tables(bandwidth(loaded, estimated, pcie_gbs, gpu_gbs, train_tflops)):
            console.print(times)
    if anchors:
        _print_anchors()
    if gpu_gb is not None and not estimated.fits:
        raise typer.Exit(1)  # scripts (and a user's CI) can tell "does not fit" from the exit code


def _verdict(loaded, estimated, gpu_gb: float | None, server_gpu_gb: float | None) -> None:
    """The peak, whether it fits the GPU (and what to change where it does not), and a server's KV cache."""
    from rwml_lite.plan import refusal, server_kv_sequences

    if loaded.model.server and server_gpu_gb:
        sequences = server_kv_sequences(loaded, server_gpu_gb)
        console.print(
            f"The vLLM server's {server_gpu_gb:.0f} GB GPU (at its default gpu_memory_utilization 0.9) holds the bf16 "
            f"weights and KV cache for {sequences} sequences of {loaded.model.max_seq_length} tokens at once.",
            highlight=False,
        )
    if gpu_gb is None:
        console.print(
            f"Peak {estimated.peak_gib:.1f} GiB in the {estimated.peak_phase} phase; the recipe is sized for a CPU: "
            "pass --gpu-gb N to check a GPU."
        )
        return
    verdict = "[green]fits[/green]" if estimated.fits else "[red]does not fit[/red]"
    console.print(
        f"Peak {estimated.peak_gib:.1f} GiB in the {estimated.peak_phase} phase: {verdict} a {gpu_gb:.0f} GB GPU."
    )
    if not estimated.fits:
        console.print(refusal(estimated), highlight=False)


def _print_anchors() -> None:
    """The estimate's error against published and measured peaks."""
    from rwml_lite.plan import anchor_errors

    rows = Table("anchor", "measured GiB", "estimate GiB", "error")
    for anchor, gib in anchor_errors():
        rows.add_row(
            anchor.source, f"{anchor.measured_gib:.2f}", f"{gib:.2f}", f"{100 * (gib / anchor.measured_gib - 1):+.0f}%"
        )
    console.print(rows)


@app.command(
    help="Run the recipe's own stack and every stage of it at toy scale on this machine (a few tasks, two optimizer "
    "steps per trainer, one wave of eval episodes per split, in a throwaway folder), print what each stage cost beside "
    "`plan`'s memory, and forecast the full run. Exit status 1 when a stage fails or a peak exceeds the card."
)
@_friendly
def selftest(
    recipe: RecipeArg,
    overrides: Overrides = None,
    gpu_gb: Annotated[
        float | None, typer.Option(help="The card to check the peaks against in GB (default: this machine's GPU).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where the measurements go (default runs/selftest/NAME.json).")
    ] = None,
    keep: Annotated[Path | None, typer.Option(help="Keep the toy run in this folder instead of deleting it.")] = None,
) -> None:
    from rwml_lite.models import prepare_backend

    loaded = _load(recipe, overrides)
    prepare_backend(loaded.model)  # before torch and transformers are imported: Unsloth must come first
    import torch

    from rwml_lite.plan import estimate
    from rwml_lite.records import atomic_write_json
    from rwml_lite.selftest import measurements, over_card, run_selftest, tables

    _quiet_libraries()
    name = _recipe_path(recipe).stem
    if gpu_gb is None and torch.cuda.is_available():
        gpu_gb = torch.cuda.get_device_properties(0).total_memory / 1024**3
    result = run_selftest(loaded, name, keep, say=lambda line: console.print(f"[bold]{line}[/bold]"))
    out = out or measurements(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result.as_json())
    for shown in tables(result, estimate(loaded, gpu_gb or 0.0)):
        console.print(shown, highlight=False)
    console.print(f"Measurements: {out}")
    exceeded = over_card(result, loaded, gpu_gb)
    if exceeded:
        raise RwmlError(exceeded)


Redo = Annotated[
    str | None, typer.Option(help="Move this stage's artifacts (and later ones) to superseded/ and run it again.")
]


@app.command(
    help=f"Run the recipe's stages (collect -> build -> filter -> rwml -> eval by default; also wm_sft, policy), "
    f"resuming where a previous run stopped. {FIELDS_HINT}"
)
@_friendly
def train(recipe: RecipeArg, overrides: Overrides = None, redo: Redo = None) -> None:
    _run(recipe, overrides, None, redo)


@app.command(help=f"Only play the training tasks and write rollouts.jsonl. {FIELDS_HINT}")
@_friendly
def collect(recipe: RecipeArg, overrides: Overrides = None, redo: Redo = None) -> None:
    _run(recipe, overrides, ["collect"], redo)


@app.command(
    "eval", help=f"Evaluate the base model and, once trained, the RWML adapter; write report.md. {FIELDS_HINT}"
)
@_friendly
def evaluate(recipe: RecipeArg, overrides: Overrides = None, redo: Redo = None) -> None:
    def stages(loaded) -> list[str]:  # reward.tau_d: auto is measured by the filter stage, which then runs first
        return ["collect", "build", *(["filter"] if loaded.reward.tau_d == "auto" else []), "eval"]

    _run(recipe, overrides, stages, redo)


@app.command(
    help="Train and evaluate the paper's variants (the recipe's study.variants: base, WM SFT, RWML, Policy RL, "
    "WM SFT + Policy RL, RWML + Policy RL, ablations on request) over one shared collect/build/filter; writes "
    f"study.md, study.json and plots/study.png. A rerun resumes where it stopped. {FIELDS_HINT}"
)
@_friendly
def study(recipe: RecipeArg, overrides: Overrides = None, redo: Redo = None) -> None:
    from rwml_lite.models import prepare_backend

    loaded = _load(recipe, overrides)
    prepare_backend(loaded.model)  # before torch and transformers are imported: Unsloth must come first
    from rwml_lite.study import planned_recipe, run_study

    _check_fits(planned_recipe(loaded))  # the memory of every stage some variant runs
    _quiet_libraries()
    folder = run_study(loaded, redo, _recipe_path(recipe))
    if is_main():
        _print_results(folder.root / "study.md")


@recipes_app.callback(invoke_without_command=True)
def recipes(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is not None:
        return
    folder = shipped_recipes_dir()
    table = Table("recipe", "sized for", "launch")
    for path in sorted(folder.glob("*.yaml")):
        header = _header(path)
        table.add_row(path.stem, header.get("Hardware", ""), header.get("Launch", ""))
    console.print(table)
    console.print(f"({folder}; `rwml-lite recipes show NAME` prints every field)")


@recipes_app.command("show", help="Every field of a recipe: value and one-line description.")
@_friendly
def recipes_show(recipe: RecipeArg, overrides: Overrides = None) -> None:
    from rwml_lite.config import describe_fields

    loaded = _load(recipe, overrides)
    table = Table("field", "value", "description", title=str(_recipe_path(recipe)))
    for key, value, description in describe_fields(loaded):
        table.add_row(key, repr(value), description)
    console.print(table)


@export_app.command(
    "verl",
    help="Write RUN_DIR's RWML triplets as verl parquet files, a compute_score over rwml-lite's reward and the "
    "verl GRPO command line into the new folder OUT_DIR.",
)
@_friendly
def export_verl(run_dir: Path, out_dir: Path) -> None:
    from rwml_lite.export.verl import export

    summary = export(run_dir, out_dir)
    console.print(
        f"verl {summary['verl_version']}: {summary['train_triplets']} training and {summary['val_triplets']} "
        f"validation triplets in {out_dir}; run `bash {out_dir / 'train.sh'}` where verl and rwml-lite are installed."
    )


@app.command(help="Check Python, torch, GPU, Java, data folders and the pinned libraries.")
def doctor() -> None:
    from rich.markup import escape

    from rwml_lite.doctor import checks

    table = Table("check", "", "detail")
    for what, ok, detail in checks():
        status = {True: "[green]OK[/green]", False: "[red]FIX[/red]", None: "[yellow]optional[/yellow]"}[ok]
        table.add_row(what, status, escape(detail))  # "pip install -e '.[gpu]'" is not a style tag
    console.print(table)


def _header(path: Path) -> dict[str, str]:
    """`# Key: value` lines at the top of a recipe (Launch, Hardware)."""
    header = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line.lstrip("# ").partition(":")
        if sep:
            header[key.strip()] = value.strip()
    return header
