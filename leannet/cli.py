"""The `leannet` command line: train, suite, publish, eval, report, multitask, repro, explain, data, recipes, list.

Every user mistake surfaces as one line `leannet: error: …` and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from leannet import signals
from leannet.errors import LeannetError, RunInterrupted

WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES)
EPILOG_TRAIN = """examples:
  leannet train recipes/baseline/fashion_mnist.yaml
  leannet train fashion_mnist trainer.max_epochs=1     # a shipped recipe by name (see `leannet recipes`)
  leannet train recipes/baseline/fashion_mnist.yaml model.name=resnet8 trainer.max_epochs=2 seed=1
  leannet train --resume runs/fashion_mnist            # continue an interrupted run exactly
  leannet train recipe.yaml trainer.devices=2 trainer.strategy=ddp trainer.accelerator=cpu
"""
ALLOW_PLUGINS = ("import the plug-ins (.py files, modules) the run folder's config.yaml names: code, so only "
                 "for run folders you trust")


def cmd_train(args: argparse.Namespace) -> None:
    if not args.resume and args.recipe and "=" in args.recipe and not Path(args.recipe).is_file():
        raise LeannetError(f"'{args.recipe}' is an override, not a recipe: give the recipe first, e.g. "
                           f"`leannet train fashion_mnist {args.recipe}` (list them with `leannet recipes`)")
    from leannet.config import load_recipe
    from leannet.runio import finite_json
    from leannet.train.run import resume, train

    if args.resume:
        overrides = ([args.recipe] if args.recipe else []) + args.overrides
        _plugin_consent(args.resume, overrides, args.allow_plugins, "leannet train --resume")
        results = resume(args.resume, overrides)
    else:
        if not args.recipe:
            raise LeannetError("give a recipe (e.g. recipes/baseline/fashion_mnist.yaml) or --resume RUN_DIR")
        results = train(load_recipe(args.recipe, args.overrides))
    print(json.dumps(finite_json(results), indent=2, allow_nan=False))


def _plugin_consent(run_dir: str, overrides: list[str], allowed: bool, command: str) -> None:
    """A run folder may come from someone else: import the plug-ins its config names only with --allow-plugins."""
    from leannet.config import load_recipe
    from leannet.plugins import require_consent

    config = Path(run_dir) / "config.yaml"
    if config.is_file():  # else the command's own error says what is missing
        require_consent(load_recipe(config, overrides).plugins, config, allowed, command)


def cmd_suite(args: argparse.Namespace) -> None:
    from leannet.report import report
    from leannet.train.suite import load_suite, run_suite

    run_suite(args.suite, args.overrides, dry_run=args.dry_run, reuse_published=args.reuse_published,
              seeds=args.seeds, variants=args.variants)
    if args.dry_run:
        return
    suite, every = load_suite(args.suite, args.overrides, args.reuse_published)  # --seeds/--variants: still all
    finished = [r.result_dir for r in every if r.status in ("done", "published")]
    print(report(finished, out=suite.out_dir, title=suite.title or Path(args.suite).stem))
    print(f"report and plots written to {suite.out_dir}/report.md and {suite.out_dir}/curves.png")
    if args.publish:
        cmd_publish(args)
    elif suite.results_dir:
        print(f"to copy the results to {suite.results_dir} (committed files): leannet publish {args.suite}")


def cmd_publish(args: argparse.Namespace) -> None:
    from leannet.train.suite import publish_suite

    copies = publish_suite(args.suite, args.overrides)
    if not copies:
        print(f"nothing to publish: no finished run of {args.suite} under its out_dir; run `leannet suite` first")
        return
    folders = sorted({str(p.parent) for p in copies})
    print(f"published {len(copies)} files to {', '.join(folders[:3])}{' …' if len(folders) > 3 else ''}")


def cmd_eval(args: argparse.Namespace) -> None:
    import lightning as L

    from leannet.data import build_loaders
    from leannet.runio import finite_json
    from leannet.train.run import load_trained, quiet_lightning

    quiet_lightning()
    _plugin_consent(args.run_dir, [], args.allow_plugins, "leannet eval")
    config, built = load_trained(args.run_dir, args.checkpoint)
    loaders = built.loaders
    if args.data:
        same = args.data == config.data.name  # then the run's dataset options (e.g. an event dataset's steps)
        loaders = build_loaders(args.data, root=args.root, eval_batch_size=config.data.eval_batch_size, val_size=0,
                                augment="none", **(config.data.args if same else {}))
        if loaders.info.num_classes != built.loaders.info.num_classes:
            raise LeannetError(
                f"{args.data} has {loaders.info.num_classes} classes but the model predicts "
                f"{built.loaders.info.num_classes}; evaluate on a dataset with the same classes"
            )
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="auto")
    rows = trainer.test(built.module, loaders.test, verbose=False)
    print(json.dumps(finite_json({"run_dir": str(args.run_dir), "checkpoint": args.checkpoint,
                                  "data": args.data or config.data.name, **rows[0]}), indent=2, allow_nan=False))


def cmd_report(args: argparse.Namespace) -> None:
    from leannet.report import report

    out = Path(args.run_dirs[0]) / "report.md"
    if args.out is None and out.is_file() and not args.force:
        raise LeannetError(f"{out} exists (e.g. a suite's report); pass --out DIR to write elsewhere "
                           "or --force to overwrite it")
    print(report(args.run_dirs, out=args.out, title=args.title))


def cmd_repro(args: argparse.Namespace) -> None:
    from leannet.report.repro import generate

    stale = generate(args.spec, root=args.root, check=args.check)
    names = ", ".join(p.name for p in stale)
    if args.check and stale:
        raise LeannetError(f"{names} out of date with the committed results; run `leannet repro` and commit")
    print(f"wrote {names}" if stale else "REPRODUCTION.md, BENCHMARKS.md and README.md's tables are up to date")


def cmd_explain(args: argparse.Namespace) -> None:
    from leannet.explain.report import explain_run

    _plugin_consent(args.run_dir, [], args.allow_plugins, "leannet explain")
    print(json.dumps(explain_run(
        args.run_dir, args.layer, args.probe, max_length=args.max_length, beam=args.beam, count=args.count,
        quantile=args.quantile, length_penalty=args.length_penalty, candidate_limit=args.candidate_limit,
        checkpoint=args.checkpoint, out=args.out, top=args.top, cache_dir=args.cache_dir, device=args.device),
        indent=2))


def cmd_data(args: argparse.Namespace) -> None:
    from leannet.data import fetch

    path = fetch(args.name, root=args.root)
    print(f"{args.name} ready in {path}")


def cmd_list(args: argparse.Namespace) -> None:
    from leannet.catalog import catalog

    print("\n".join(catalog()[args.what]))


def cmd_recipes(args: argparse.Namespace) -> None:
    from leannet.config import packaged_recipes, recipe_names

    print(f"# shipped with leannet, in {packaged_recipes()}; run one with `leannet train NAME`")
    print("\n".join(recipe_names()))


def cmd_multitask(args: argparse.Namespace) -> None:
    if args.action == "run":  # kept from the old multitask command: the same as `leannet train`
        args.resume = None
        cmd_train(args)
    elif args.action == "report":
        from leannet.multitask.report import load_runs, write_report

        print(write_report(load_runs(args.paths), args.out))
        print(f"summary.json, table.md and policy plots written to {args.out}")
    else:
        raise LeannetError("`multitask compare` was replaced by a suite: `leannet suite multitask/suite_scenes` "
                           "(--seeds S ... to add seeds), then "
                           "`leannet multitask report runs/multitask/scenes --out DIR`")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leannet", description="Eight papers' techniques on your own models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train one recipe", epilog=EPILOG_TRAIN,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a YAML recipe; any key can be overridden as key=value.")
    t.add_argument("recipe", nargs="?", help="recipe YAML, e.g. recipes/baseline/fashion_mnist.yaml")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.05 seed=1")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    t.add_argument("--allow-plugins", action="store_true", help=ALLOW_PLUGINS)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("suite", help="run variants of a recipe over seeds and report",
                       description="Run every variant × seed of a suite file that has no results yet, "
                       "then write report.md and curves.png in the suite's out_dir.")
    s.add_argument("suite", help="suite YAML, e.g. recipes/suites/main.yaml")
    s.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
    s.add_argument("--dry-run", action="store_true", help="list the runs and their status only")
    s.add_argument("--reuse-published", action="store_true",
                   help="count runs whose results are already copied to the suite's results_dir as done "
                   "(a fresh clone then trains only the missing ones)")
    s.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="run only these of the suite's seeds (e.g. two calls, --seeds 0 2 4 and --seeds 1 3)")
    s.add_argument("--variants", nargs="+", metavar="NAME", help="run only these of the suite's variants")
    s.add_argument("--publish", action="store_true",
                   help="then copy the finished runs' result files and report to the suite's results_dir "
                   "(committed files; same as `leannet publish SUITE`)")
    s.set_defaults(func=cmd_suite)

    pb = sub.add_parser("publish", help="copy a suite's finished results to its results_dir (committed files)",
                        description="Copy results.json, metrics.csv and config.yaml of every finished run of "
                        "the suite (never checkpoints), and its report pages, from out_dir (runs/) to "
                        "results_dir (results/). The only command that writes committed result files.")
    pb.add_argument("suite", help="suite YAML, e.g. recipes/suites/main.yaml")
    pb.add_argument("overrides", nargs="*", help="the key=value overrides the suite was run with")
    pb.set_defaults(func=cmd_publish)

    e = sub.add_parser("eval", help="evaluate a trained run on a test set")
    e.add_argument("run_dir", help="a trained run directory, e.g. runs/fashion_mnist")
    e.add_argument("--checkpoint", choices=["last", "best"], default="last",
                   help="the last epoch's weights or the best validation checkpoint (default last)")
    e.add_argument("--data", help="evaluate on another dataset (same classes), e.g. mnist")
    e.add_argument("--root", help="data directory for --data")
    e.add_argument("--allow-plugins", action="store_true", help=ALLOW_PLUGINS)
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("report", help="markdown table + learning curves of run directories")
    r.add_argument("run_dirs", nargs="+", help="run directories or folders containing them")
    r.add_argument("--out", help="where to write report.md and curves.png (default: the first path)")
    r.add_argument("--title", default="Results", help="the report's heading")
    r.add_argument("--force", action="store_true", help="overwrite the first path's report.md when --out is not given")
    r.set_defaults(func=cmd_report)

    mt = sub.add_parser("multitask", help="multi-task runs (AdaShare): train one, or report a comparison",
                        description="Multi-task learning on dense data. Methods multitask (hard sharing, fixed or "
                        "random policies) and adashare (search, choose, re-train) train with `leannet train` / "
                        "`leannet suite` like every method; `multitask report` tabulates every task metric and "
                        "Δm vs single-task, and plots each AdaShare policy.")
    msub = mt.add_subparsers(dest="action", required=True, metavar="ACTION")
    mr = msub.add_parser("run", help="train one recipe (the same as `leannet train`)")
    mr.add_argument("recipe", help="e.g. multitask/scenes")
    mr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. method.name=adashare seed=1")
    mrep = msub.add_parser("report", help="table (Δm, every metric) and policy plots of multi-task runs")
    mrep.add_argument("paths", nargs="+", type=Path, help="run folders or a suite's out_dir / results_dir")
    mrep.add_argument("--out", type=Path, required=True, help="where to write summary.json, table.md, policy_*.png")
    mc = msub.add_parser("compare", help="replaced by `leannet suite multitask/suite_scenes`")
    mc.add_argument("rest", nargs="*", help="ignored: the command says what replaced it")
    mt.set_defaults(func=cmd_multitask)

    rp = sub.add_parser("repro", help="regenerate REPRODUCTION.md and BENCHMARKS.md from committed results",
                        description="Read the spec and the result files under results/ and benchmarks/results/, "
                        "and write REPRODUCTION.md, BENCHMARKS.md and the tables between README.md's "
                        "<!-- repro:NAME --> markers (never edit those by hand).")
    rp.add_argument("--spec", default="recipes/reproduction.yaml", help="the sections and benchmarks to report")
    rp.add_argument("--root", default=".", help="repository root holding results/ (default: .)")
    rp.add_argument("--check", action="store_true", help="only check that the files are up to date (exit 2 if not)")
    rp.set_defaults(func=cmd_repro)
    x = sub.add_parser("explain", help="dissect a layer and explain its units with formulas of concepts",
                       description="Network Dissection + compositional explanations: per unit a formula "
                       "(AND/OR/NOT of probe concepts), its IoU, the best single concept; CSV, JSON and an "
                       "HTML report with the top images, in RUN_DIR/explain/LAYER unless --out.")
    x.add_argument("run_dir", help="a trained run directory, e.g. runs/explain/scenes_resnet8")
    x.add_argument("--layer", required=True, help="module path of the layer, e.g. layer3 or features.8")
    x.add_argument("--probe", default="scenes", help="scenes or broden:PATH (a Broden folder)")
    x.add_argument("--max-length", type=int, default=3, help="maximum formula length (1 = NetDissect)")
    x.add_argument("--beam", type=int, default=5, help="beam width of the formula search (default 5)")
    x.add_argument("--count", type=int, default=2000, help="number of probe images")
    x.add_argument("--quantile", type=float, default=0.005, help="top quantile of activations a unit fires on")
    x.add_argument("--length-penalty", type=float, default=0.0, help="score = IoU - penalty * (length - 1)")
    x.add_argument("--candidate-limit", type=int, help="extend formulas only with the K best single concepts")
    x.add_argument("--checkpoint", choices=["last", "best"], default="last",
                   help="which checkpoint of the run to dissect (default last)")
    x.add_argument("--top", type=int, default=6, help="images per unit in the report")
    x.add_argument("--out", help="output folder (default RUN_DIR/explain/LAYER)")
    x.add_argument("--cache-dir", help="stream activations into a .npy memory map here (for probes too big for memory)")
    x.add_argument("--allow-plugins", action="store_true", help=ALLOW_PLUGINS)
    x.add_argument("--device", default="auto", help="where the model runs: auto (CUDA if present), cpu, cuda, cuda:N")
    x.set_defaults(func=cmd_explain)

    d = sub.add_parser("data", help="dataset utilities")
    dsub = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="put a dataset into the data directory (LEANNET_DATA)")
    f.add_argument("name", help="e.g. fashion_mnist")
    f.add_argument("--root", help="data directory (default: $LEANNET_DATA or ~/.cache/leannet/data)")
    f.set_defaults(func=cmd_data)

    rc = sub.add_parser("recipes", help="list the recipes shipped with leannet",
                        description="Recipes ship with the package: `leannet train byot/fashion_mnist` runs "
                        "recipes/byot/fashion_mnist.yaml from anywhere (a bare name picks the baseline one).")
    rc.set_defaults(func=cmd_recipes)

    ls = sub.add_parser("list", help="list registered names")
    ls.add_argument("what", choices=["models", "datasets", "methods", "norms"], help="which registry to list")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signals.install()
    try:
        args.func(args)
    except RunInterrupted as err:
        print(f"leannet: {err}", file=sys.stderr)
        return err.exit_code
    except LeannetError as err:
        print(f"leannet: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk filled up or went read-only mid-run: checkpoints so far are kept
        if err.errno not in WRITE_ERRNOS:
            raise
        from leannet.train.checks import describe_os_error

        print(f"leannet: error: cannot write {err.filename or 'a file'}: {describe_os_error(err)}; free space or "
              "choose another out_dir, then `leannet train --resume RUN_DIR`", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("leannet: interrupted before any run started; nothing to resume", file=sys.stderr)
        return signals.exit_code()
    return 0


if __name__ == "__main__":
    sys.exit(main())
