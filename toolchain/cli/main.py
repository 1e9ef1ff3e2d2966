"""The ``toolchain`` command. Commands turn options into arguments and call the library.

This is the only place that maps ``ToolchainError`` to exit codes: one line on stderr, the
traceback only with ``-v``. Results go to stdout; progress and logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from toolchain.errors import FILESYSTEM_ERRNOS, FilesystemError, InfeasibleError, MissingBuildError, ToolchainError

log = logging.getLogger("toolchain")


class _Aliased(click.Option):
    """An option whose later names are old spellings: they still work but ``--help`` shows the first only."""

    def get_help_record(self, ctx):
        names, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = names


def _build_dir_option(*old: str, help: str):
    """``--build-dir``, the build folder option of every command (``old`` names kept as hidden aliases)."""
    return click.option(
        "--build-dir",
        *old,
        "build_dir",
        cls=_Aliased,
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("build"),
        show_default=True,
        help=help,
    )


_wide_option = click.option(
    "--wide",
    is_flag=True,
    help="Show every table column at full width (default: fit the terminal; COLUMNS, else 80 off a terminal).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs and full tracebacks.")
@click.option(
    "--targets-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TOOLCHAIN_TARGETS",
    help="Resolve target profiles in this folder instead of the shipped targets/ (env TOOLCHAIN_TARGETS).",
)
@click.version_option(package_name="toolchain")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, targets_dir: Path | None) -> None:
    """Build neural networks for edge devices: convert, compress and validate on emulated runtimes.

    \b
    toolchain build recipes/mobilenet.yaml      train, compress, quantize, validate, write build/mobilenet/
    toolchain compare recipes/mobilenet.yaml    the targets side by side (--format html for a page)
    toolchain package recipes/mobilenet.yaml    reproducible release tarball in dist/
    toolchain verify dist/mobilenet-*.tar.gz    check a release tarball
    toolchain inspect model.tflite              ops, tensors, quantization, size of any .tflite
    toolchain recipe check recipes/x.yaml       validate a recipe without building
    toolchain targets list                      device profiles you can target
    toolchain search recipes/x.yaml --workers 2 which model to ship on each target (a search: block)
    """
    from toolchain.fsutil import setup_logging

    ctx.obj = {"verbose": verbose}
    setup_logging(verbose)
    if targets_dir is not None:
        from toolchain.config.loader import set_targets_dir

        set_targets_dir(targets_dir)


_workers_option = click.option(
    "--workers",
    type=click.IntRange(min=1, max=256),
    default=None,
    help="Run on a local Dask cluster of this many worker processes started here.",
)
_scheduler_option = click.option(
    "--scheduler",
    metavar="tcp://HOST:8786",
    default=None,
    help="Run on an existing Dask cluster instead. Every worker must reach BUILD_DIR at the same path (a shared "
    "folder): the builds write their artifacts and the stage cache there.",
)


def _cluster(workers: int | None, scheduler: str | None):
    """The Dask executor --workers / --scheduler ask for, or None."""
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    if workers is None and scheduler is None:
        return None
    from toolchain.executors.dask import DaskCluster

    return DaskCluster(workers, scheduler)


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="RECIPE")
@click.option(
    "-t",
    "--target",
    "targets",
    multiple=True,
    help="Build only this target (repeatable); default: the recipe's targets.",
)
@_build_dir_option("-o", "--out", help="Build folder; artifacts go to BUILD_DIR/<recipe>/<target>/.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the build record (schema toolchain.build/2, docs/build-record.schema.json) on stdout and nothing else.",
)
@click.option("--no-cache", is_flag=True, help="Rebuild every stage even if its inputs are unchanged.")
@click.option(
    "--remeasure",
    is_flag=True,
    help="Run the target checks again (host latency is otherwise kept from the run that measured it).",
)
@click.option("--no-wait", is_flag=True, help="Fail (exit 18) instead of waiting when another build uses BUILD_DIR.")
@click.option(
    "--diagnose",
    "diagnose_int8",
    is_flag=True,
    help="Also write each int8 target's per-layer diagnosis (diagnosis.md/.html/.json, see 'toolchain diagnose').",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes validating targets at once (results and logs keep the targets' order); "
    "default: the usable cores, at most 4; 1: one after another.",
)
@_workers_option
@_scheduler_option
@_wide_option
def build(
    recipes: tuple[Path, ...],
    targets: tuple[str, ...],
    build_dir: Path,
    as_json: bool,
    no_cache: bool,
    remeasure: bool,
    no_wait: bool,
    diagnose_int8: bool,
    jobs: int | None,
    workers: int | None,
    scheduler: str | None,
    wide: bool,
) -> None:
    """Build each RECIPE for each target: data, model, training, conversion, the target's checks and gates.

    Exits 0 when every gate passes; when one fails the reports are still written and the exit code
    says which kind of failure came first: 9 a target's memory budget (does not fit) or its compiler
    refuses the model, 10 a runtime crashed or refused the artifact (or a check failed), 11 an
    acceptance gate. With --workers or --scheduler (a Dask cluster) several recipes build at once, one per
    worker; one recipe has its targets' checks run there.
    """
    from toolchain.config import load_recipe
    from toolchain.executors import default_jobs
    from toolchain.pipeline import build as run_build
    from toolchain.pipeline import build_many

    rs = [load_recipe(p) for p in recipes]  # every recipe checked before any work
    options = {"use_cache": not no_cache, "remeasure": remeasure, "diagnose_int8": diagnose_int8}
    cluster = _cluster(workers, scheduler)
    if cluster is not None and len(rs) > 1:
        with cluster:
            records = build_many(rs, build_dir, cluster, list(targets) or None, not no_wait, **options)
    else:
        with cluster or nullcontext():
            records = [
                run_build(
                    r,
                    list(targets) or None,
                    build_dir,
                    wait=not no_wait,
                    jobs=jobs or default_jobs(),
                    executor=cluster,
                    **options,
                )
                for r in rs
            ]
    if as_json:
        click.echo(records[0].to_json() if len(records) == 1 else "[" + ",\n".join(r.to_json() for r in records) + "]")
    else:
        from toolchain.report.console import print_summary

        for record in records:
            print_summary(record, wide)
    for r in rs:
        log.info("build record: %s", build_dir / r.name / "build.json")
    error = next((e for e in (record.failure_error() for record in records) if e), None)
    if error:
        raise error


@cli.group()
def recipe() -> None:
    """Work with recipe files."""


@recipe.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def recipe_check(files: tuple[Path, ...]) -> None:
    """Validate recipe FILES (schema, targets, plans) without building anything."""
    from toolchain.config import load_recipe, load_target
    from toolchain.stages.plan import resolve_plan

    for f in files:
        r = load_recipe(f)
        plans = [f"{t}: {resolve_plan(r, load_target(t)).mode}" for t in r.targets]
        click.echo(f"{f}: ok ({r.name}; {', '.join(plans)})")


@cli.group()
def targets() -> None:
    """Device profiles in targets/."""


@targets.command("list")
@_wide_option
def targets_list(wide: bool) -> None:
    """List the target profiles."""
    from toolchain.config import list_targets, load_target
    from toolchain.report.console import targets_listing

    profiles = [load_target(name) for name in list_targets()]
    click.echo(targets_listing([(t.name, t.kind, t.checks, t.description) for t in profiles], wide), nl=False)


@targets.command("show")
@click.argument("name")
def targets_show(name: str) -> None:
    """Show every field of target profile NAME, defaults included."""
    import yaml

    from toolchain.config import load_target

    click.echo(yaml.safe_dump(load_target(name).model_dump(mode="json"), sort_keys=False).rstrip())


def _build_dir(source: Path, build_dir: Path) -> Path:
    """A build folder: given as is, or the recipe's (see ``pipeline.ensure_build``)."""
    if source.is_dir():
        return source
    from toolchain.config import load_recipe
    from toolchain.pipeline import ensure_build

    recipe = load_recipe(source)
    ensure_build(recipe, build_dir)
    return build_dir / recipe.name


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--version", "version", help="Release version in the file name; default: dev-<hash of the contents>.")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dist"),
    show_default=True,
    help="Where the tarball goes.",
)
@_build_dir_option("--build-out", help="Build folder when SOURCE is a recipe (built there when missing).")
@click.option("--allow-failed", is_flag=True, help="Package even if a gate failed (the manifest records which).")
def package(source: Path, version: str | None, out: Path, build_dir: Path, allow_failed: bool) -> None:
    """Bundle a build into OUT/<name>-<version>.tar.gz. SOURCE is a build folder, or a recipe: its existing
    build is packaged when it was made from the same recipe text, data and tools, otherwise it is built first.

    The tarball holds per target the artifacts (and Vela's), C sources, labels and reports, plus
    manifest.json with the sha256 of every file. The same build always gives the same bytes.
    Exits 12 when a gate failed and --allow-failed is not given.
    """
    from toolchain.fsutil import sha256_file
    from toolchain.package.bundle import package as make_bundle

    path = make_bundle(_build_dir(source, build_dir), out, version, allow_failed)
    click.echo(f"{path}  sha256 {sha256_file(path)}")


@cli.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
def verify(bundle: Path) -> None:
    """Check a release BUNDLE: every hash, no unsafe paths or links, each artifact loads in its runtime.

    Exits 0 when it is intact, 14 when a file does not match the manifest (tampered), 13 when the
    bundle is unreadable, unsafe or an artifact does not load (malformed).
    """
    from toolchain.package.bundle import verify as check

    summary = check(bundle)
    for line in summary["artifacts"]:
        click.echo(f"  {line}")
    click.echo(f"ok: {bundle}: {summary['files']} files match the manifest")


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-t",
    "--target",
    "targets",
    multiple=True,
    help="Compare only these targets (repeatable); default: every target of the build.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md", "html"]), default="table", show_default=True)
@_build_dir_option(help="Where the recipe's build is (BUILD_DIR/<recipe>/build.json).")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the md/html report goes; default: BUILD_DIR/<recipe>/.",
)
@click.option(
    "--build",
    "do_build",
    is_flag=True,
    help="Build the recipe first when BUILD_DIR has no build of it (may train: minutes).",
)
@click.option(
    "--plans",
    help="Compare quantize plans too, e.g. int8,int16x8,float16: one build per plan (BUILD_DIR/<recipe>-<plan>, "
    "built when missing, each target that runs the plan), one table of plan x target.",
)
@_workers_option
@_scheduler_option
@_wide_option
def compare(
    recipe: Path,
    targets: tuple[str, ...],
    fmt: str,
    build_dir: Path,
    out: Path | None,
    do_build: bool,
    plans: str | None,
    workers: int | None,
    scheduler: str | None,
    wide: bool,
) -> None:
    """Compare RECIPE's model and plan across device profiles, side by side, from its build record.

    Reads BUILD_DIR/<recipe>/build.json and re-runs nothing; with no build there it says so and exits
    16, unless --build is given. Marks the best value per column (*) and the Pareto front over
    accuracy, latency and memory.
    """
    from toolchain.config import load_recipe, load_target
    from toolchain.errors import MissingBuildError
    from toolchain.record import load_record
    from toolchain.report import compare as cmp

    names = [p.strip() for p in plans.split(",")] if plans is not None else []
    if not all(names):
        raise click.BadParameter(
            f"{plans!r} has an empty plan: write plans between commas, e.g. int8,int16x8,float16",
            param_hint="'--plans'",
        )
    r = load_recipe(recipe)
    for t in targets:  # a profile that does not exist is refused as such (exit 4), before any build is read
        load_target(t)
    record_path = build_dir / r.name / "build.json"
    if plans is not None:
        from toolchain.pipeline import plan_builds

        cluster = _cluster(workers, scheduler)  # --plans: the plans' builds at once, one per worker
        with cluster or nullcontext():
            table = cmp.compare_plans(plan_builds(r, names, build_dir, cluster))
        _emit(table, fmt, out or build_dir / r.name, r.name, wide)
        return
    if not record_path.exists():
        if not do_build:
            raise MissingBuildError(
                f"no build of {r.name} in {build_dir} ({record_path} is missing); run 'toolchain build {recipe}' "
                f"or pass --build (or --build-dir where it was built)"
            )
        from toolchain.pipeline import ensure_build

        ensure_build(r, build_dir, list(targets) or None)
    table = cmp.compare(load_record(record_path), list(targets) or None)
    _emit(table, fmt, out or build_dir / r.name, r.name, wide)


@cli.command()
@click.argument("build_a", type=click.Path(exists=True, path_type=Path))
@click.argument("build_b", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table", show_default=True)
@click.option(
    "--fail-on",
    "fail_on",
    default=None,
    help='Exit 20 when B regresses past a rule, e.g. "size>+2%,arena>+0,accuracy<-0.5". Quantities: size, ram, '
    "arena, flash (bytes), latency (measured ms), estimate (estimated ms), accuracy (headline metric, better = "
    "higher; points of top-1), accel_ops; % makes a rule relative to A. A lost target or recipe, a pass turned into "
    "a fail, a NaN or a value B lacks regresses too.",
)
@_wide_option
def diff(build_a: Path, build_b: Path, fmt: str, fail_on: str | None, wide: bool) -> None:
    """Compare two builds (folders or build.json files) target by target: size, RAM, arena, flash, latency
    (measured and estimated), accuracy or the task's metric, ops on the accelerator, pass/fail. Either may be a
    build root (a BUILD_DIR of <recipe>/build.json folders): each recipe in both is compared, matched by name.

    Reads the build records only. Exit 0, or 20 when --fail-on is given and B regresses (the offending
    rows are named on stderr), so CI can hold a model to its last release.
    """
    from toolchain.errors import RegressionError
    from toolchain.report import diff as d

    rules = d.parse_rules(fail_on) if fail_on is not None else []
    table = d.diff_paths(build_a, build_b, rules)
    tables = table["recipes"].values() if "recipes" in table else [table]
    if fmt == "json":
        click.echo(json.dumps(table, indent=2))
    elif fmt == "md":
        click.echo("\n".join(d.markdown(one) for one in tables), nl=False)
    else:
        for one in tables:
            d.print_table(one, wide)
    for side, path in (("a", build_a), ("b", build_b)):
        if fmt != "json" and table.get(f"only_in_{side}"):
            click.echo(f"only in {path}: {', '.join(table[f'only_in_{side}'])}")
    if table["regressed"]:
        raise RegressionError(f"{build_b} regressed against {build_a}: " + " | ".join(d.regressions(table)))


def _emit(table: dict, fmt: str, folder: Path, name: str, wide: bool = False) -> None:
    from toolchain.report import compare as cmp

    if fmt == "json":
        click.echo(json.dumps(table, indent=2))
    elif fmt == "table":
        cmp.print_table(table, wide)
    else:
        from toolchain.fsutil import atomic_write
        from toolchain.report.html import render

        text = cmp.markdown(table) if fmt == "md" else render(table)
        path = atomic_write(folder / f"compare{'-plans' if 'plans' in table else ''}.{fmt}", text)
        if fmt == "md":
            click.echo(text)
        log.info("comparison written to %s", path)
        if fmt == "html":
            click.echo(str(path))


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--target", "target", help="The target whose int8 plan to explain (default: the recipe's first int8 one)."
)
@_build_dir_option("--out", help="Build folder: its cached model, data and calibration are reused (or built).")
@click.option("--samples", type=click.IntRange(1), default=64, show_default=True, help="Eval samples to measure on.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "json"]),
    default="md",
    show_default=True,
    help="What goes to stdout (md, json) or which page path is printed (html); all three are written.",
)
def diagnose(recipe: Path, target: str | None, build_dir: Path, samples: int, fmt: str) -> None:
    """Explain where RECIPE's int8 plan loses accuracy, layer by layer, and what fixes it.

    For every quantized layer, on eval samples: its int8 output against the float op's, isolated (same input:
    the layer's own error) and accumulated (everything up to it); activation range and clipped share; the
    spread of per-channel weight ranges; mapped to Keras layer names and ranked, culprits first, each with the
    fixes the toolchain can apply. Writes BUILD_DIR/<recipe>/diagnosis/<target>.{md,html,json}.
    """
    from toolchain.config import load_recipe
    from toolchain.pipeline import diagnose as run
    from toolchain.report import diagnosis
    from toolchain.stages.diagnose import write_diagnosis

    r = load_recipe(recipe)
    d = run(r, target, build_dir, samples)
    page = write_diagnosis(build_dir / r.name / "diagnosis", d, d["target"])
    log.info("diagnosis written to %s (.md, .html, .json)", page.with_suffix(""))
    if fmt == "json":
        click.echo(json.dumps(d, indent=1, default=float))
    elif fmt == "md":
        click.echo(diagnosis.markdown(d))
    else:
        click.echo(str(page))


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@_build_dir_option(help="Build folder: the search goes to BUILD_DIR/<recipe>/ (search.json, search.html, trials/).")
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=256),
    default=None,
    help="Trials at once, on a local Dask cluster of this many worker processes started here (default: the usable "
    "cores, at most 4). TensorFlow in each uses the cores / workers.",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:8786",
    default=None,
    help="Run the trials on an existing Dask cluster instead. Every worker must reach BUILD_DIR at the same path "
    "(a shared folder): the trials write their builds and the stage cache there.",
)
@click.option(
    "--storage",
    metavar="URL",
    default=None,
    help="The study database: an SQLite file (a path or sqlite:////abs/path.db), or postgresql://user:pw@host/db to "
    "share the studies between machines. Default: BUILD_DIR/<recipe>/search.db. The same command resumes.",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1, max=10_000),
    default=None,
    help="Finished trials per target (default: the recipe's search.trials); raising it resumes the study.",
)
@click.option("--status", is_flag=True, help="Show the studies' progress from the database alone; run nothing.")
@click.option(
    "--write-best",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write each target's best recipe (the most accurate feasible trial) to DIR/<recipe>-<target>.yaml.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", help="Output on stdout.")
@click.option("--no-wait", is_flag=True, help="Fail (exit 18) instead of waiting when another build uses BUILD_DIR.")
@_wide_option
def search(
    recipe: Path,
    build_dir: Path,
    workers: int | None,
    scheduler: str | None,
    storage: str | None,
    trials: int | None,
    status: bool,
    write_best: Path | None,
    fmt: str,
    no_wait: bool,
    wide: bool,
) -> None:
    """Search RECIPE's 'search:' space for the best model each target can run: the most accurate that fits its
    budgets and meets the constraints, and the Pareto front of accuracy against latency (and memory).

    Each trial is a build of the recipe at one point of the space for one target, run on a Dask cluster; the
    studies (Optuna: multi-objective TPE or NSGA-II) live in a database, so the same command resumes. Writes
    BUILD_DIR/<recipe>/search.json (every trial) and search.html. Exit 0 when every target has a feasible point,
    25 when one has none (the closest trial is shown).
    """
    from toolchain.config import load_recipe
    from toolchain.search import storage as db
    from toolchain.tuner import check, study_names

    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    r = load_recipe(recipe)
    check(r)
    default = build_dir / r.name / "search.db"
    url = db.url_for(storage, default)
    if status:
        if storage is None and not default.exists():
            raise MissingBuildError(f"{default}: no search of {r.name} has run into {build_dir} (no study database)")
        from toolchain.report.search import status_text

        click.echo(status_text(r, db.open_storage(url), study_names(r)), nl=False)
        return
    from toolchain.executors import default_jobs
    from toolchain.executors.dask import DaskCluster
    from toolchain.stages.context import hold
    from toolchain.tuner import best_recipes
    from toolchain.tuner import search as run_search

    with hold(build_dir, not no_wait):
        record = run_search(r, build_dir, lambda: DaskCluster(workers or default_jobs(), scheduler), url, trials)
    if fmt == "json":
        click.echo(json.dumps(record, indent=2, default=str))
    else:
        from toolchain.report.search import text

        click.echo(text(record, wide), nl=False)
    from toolchain.fsutil import atomic_write
    from toolchain.report.search import html

    page = atomic_write(build_dir / r.name / "search.html", html(record))
    log.info("search record: %s; page: %s", build_dir / r.name / "search.json", page)
    if write_best is not None:
        for path in best_recipes(record, write_best):
            log.info("best recipe: %s", path)
    missing = [t["target"] for t in record["targets"] if t["best"] is None]
    if missing:
        raise InfeasibleError(
            f"no trial met the constraints on {', '.join(missing)}: the closest is shown (relax search.constraints, "
            "or widen the space)"
        )


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@_wide_option
def inspect(model: Path, as_json: bool, wide: bool) -> None:
    """Show what is inside any .tflite MODEL: ops, tensors (dtype, shape, quantization), size breakdown, I/O."""
    from toolchain.report.inspect import inspect_model, print_inspection
    from toolchain.tflite_model import TFLiteModel

    info = inspect_model(TFLiteModel.from_file(model))
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        print_inspection(info, wide)


class Terminated(BaseException):
    """SIGTERM (what ``timeout``, CI and process managers send), raised where the program is, like Ctrl-C."""


_signalled: list[int] = []  # SIGTERM received during this invocation of ``main``


def _terminate(signum, frame):
    _signalled.append(signum)
    raise Terminated()


def _value_options(command: click.Command) -> set[str]:
    """The names of every option that takes a value, in ``command`` and its subcommands."""
    names = {o for p in command.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}
    for sub in getattr(command, "commands", {}).values():
        names |= _value_options(sub)
    return names


def _verbose(argv: list[str]) -> list[str]:
    """``-v`` / ``--verbose`` anywhere before a ``--`` (``toolchain build recipe.yaml -v``) moved to the front,
    where the ``toolchain`` command itself takes it; not an option's value (``--target -v`` names a target)."""
    end = argv.index("--") if "--" in argv else len(argv)
    takes_value = _value_options(cli)
    flag = [i for i, a in enumerate(argv[:end]) if a in ("-v", "--verbose") and not (i and argv[i - 1] in takes_value)]
    return (["-v"] if flag else []) + [a for i, a in enumerate(argv) if i not in flag]


def main(argv: list[str] | None = None) -> None:
    argv = _verbose(sys.argv[1:] if argv is None else list(argv))
    verbose = argv[:1] == ["-v"]
    _signalled.clear()  # this invocation's signals only
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(args=argv, prog_name="toolchain", standalone_mode=False)
    except ToolchainError as exc:
        _after_sigterm()
        _fail(exc, exc.exit_code, verbose)
    except Terminated:
        _exit_terminated()
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line too, not click's usage block
        command = exc.ctx.command_path if exc.ctx is not None else "toolchain"
        _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code, False)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code, False)
    except OSError as exc:
        _after_sigterm()
        if exc.errno not in FILESYSTEM_ERRNOS:
            _internal(exc, verbose)
        where = exc.filename or "the build folder"
        _fail(FilesystemError(f"cannot write {where}: {exc.strerror}"), FilesystemError.exit_code, verbose)
    except Exception as exc:  # a bug, not a user error: still one line unless -v
        _after_sigterm()
        _internal(exc, verbose)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(0)


def _exit_terminated() -> None:
    click.echo("terminated", err=True)
    sys.exit(143)


def _after_sigterm() -> None:
    """A SIGTERM that a library wrapped into its own error on the way up (TensorFlow does, when the signal lands
    in a callback it runs) still ends the program as terminated."""
    if _signalled:
        _exit_terminated()


def _line(text: str) -> str:
    """An error as one line: newlines and other control characters (in a path, say) escaped."""
    import re

    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


def _fail(exc: BaseException | str, code: int, verbose: bool) -> None:
    """A user's error: one line, the traceback only with ``-v``."""
    if verbose:
        import traceback

        traceback.print_exc()
    click.echo(f"error: {_line(str(exc))}", err=True)
    sys.exit(code)


def _internal(exc: Exception, verbose: bool) -> None:
    """A bug: one line naming it, with the hint to run with ``-v`` (which raises it, traceback and all)."""
    if verbose:
        raise exc
    click.echo(
        f"error: internal error: {_line(f'{type(exc).__name__}: {exc}')} (run with -v for the traceback)", err=True
    )
    sys.exit(1)
