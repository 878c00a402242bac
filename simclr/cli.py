"""`simclr` command line. Thin: every command calls the same functions a Python user would."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from simclr.ablate.command import add_ablate_parser
from simclr.config.run import EVAL_PROTOCOLS
from simclr.config.schema import ConfigError, describe
from simclr.data.formats import DataError
from simclr.runs.ranks import launcher_rank
from simclr.utils import error_line

USER_ERRORS = (ConfigError, DataError, FileExistsError, FileNotFoundError)


def _guess_dataset(path: str | None) -> str:
    if path is None:
        return "digits"
    p = Path(path)
    if p.is_dir() and any(p.glob("*-idx3-ubyte*")):
        return "fashion_mnist"
    if p.is_dir() and (any(p.glob("*_X.bin")) or (p / "stl10_binary").is_dir()):
        return "stl10"
    return "cifar10" if "cifar" in p.name.lower() else "imagefolder"


def _no_overwrite(path: Path, force: bool) -> Path:
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; choose another --out or pass --force to replace it.")
    return path


# ---------------------------------------------------------------- policy
IMAGE_OUT = (".png", ".jpg", ".jpeg", ".pdf", ".svg")  # `policy show --out` formats


def cmd_policy(args) -> int:
    from simclr.augment import REGISTRY, load_policy
    from simclr.augment.policy import shipped

    if args.action == "list":
        for name in shipped():
            pol = load_policy(name)
            print(f"{name:24s} {pol.description}")
        return 0
    if args.action == "ops":
        for name, op in sorted(REGISTRY.items()):
            print(f"{name}: {(op.__doc__ or '').strip().splitlines()[0] if op.__doc__ else ''}")
            for line in describe(op.Params):
                print(f"    {line}")
        return 0
    if not args.policy:
        raise ConfigError(f"simclr policy {args.action}: give a POLICY file or shipped name.")
    pol = load_policy(args.policy)
    if args.action == "check":
        print(f"# {pol.source}: valid")
        print(pol.to_yaml(), end="")
        return 0
    # show: checked before any data is read
    for name, value, low in (("--n", args.n, 1), ("--views", args.views, 1)):
        if value < low or value > 64:
            raise ConfigError(f"{name}: {value} is out of range; give an integer in [1, 64].")
    if Path(args.out).suffix.lower() not in IMAGE_OUT:
        raise ConfigError(f"--out: '{args.out}' is not an image file matplotlib writes; end it in "
                          f"{', '.join(IMAGE_OUT)}.")
    import torch

    from simclr.augment.grid import policy_grid
    from simclr.config.run import DataConfig
    from simclr.data import load_split, per_class_indices

    dataset = args.dataset or _guess_dataset(args.data)
    data = load_split(DataConfig(name=dataset, path=args.data), "train")
    if (data.labels >= 0).any():  # one image per class, so the grid shows the dataset's variety
        idx = per_class_indices(data.labels, 1, args.seed)[: args.n]
    else:
        idx = torch.arange(min(args.n, len(data)))
    out = policy_grid(pol, data.images[idx], _no_overwrite(Path(args.out), args.force), views=args.views,
                      seed=args.seed)
    print(f"wrote {out} ({len(idx)} {dataset} images x {args.views} views, policy {pol.name})")
    return 0


# ---------------------------------------------------------------- pretrain
def cmd_pretrain(args) -> int:
    from simclr import train
    from simclr.config.run import load_config

    if args.evaluate:  # a misspelt protocol is refused now, not after the training it follows
        unknown = [p for p in args.evaluate.split(",") if p not in EVAL_PROTOCOLS]
        if unknown:
            raise ConfigError(f"--evaluate: unknown protocol '{unknown[0]}'; valid: {', '.join(EVAL_PROTOCOLS)} "
                              "(comma-separated).")
    if args.resume == "auto":  # a (re)queued job: continue the run this job started, or start it
        if not args.config and not args.overrides:
            raise ConfigError("--resume auto: give the run's --config (and overrides) as when it started; it "
                              "continues that run if this job (or, outside SLURM, its name=) has one, else starts it.")
        result = train.run(load_config(args.config, args.overrides), resume="auto")
    elif args.resume:
        if args.config or args.overrides:
            raise ConfigError("--resume continues a run with its saved config.yaml; drop --config and overrides "
                              "(or use --resume auto with them).")
        result = train.run(resume=args.resume)
    else:
        result = train.run(load_config(args.config, args.overrides))
    if launcher_rank() > 0:  # one process per device: rank 0 reports (and evaluates) for the run
        return 0
    print(f"run directory: {result.run_dir}")
    for key in ("train/loss_epoch", "monitor/knn_top1"):
        if key in result.metrics:
            print(f"  {key} = {result.metrics[key]:.4f}")
    if args.evaluate:
        from simclr.evaluate import evaluate_run
        evaluate_run(result.run_dir, protocols=args.evaluate.split(","))
    return 0


# ---------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    from simclr.evaluate import evaluate_run

    evaluate_run(args.target, protocols=args.protocol.split(","), data_path=args.data, dataset=args.dataset,
                 plot=args.plot, baselines=not args.no_baselines, overrides=args.overrides)
    return 0


# ---------------------------------------------------------------- export
def cmd_export(args) -> int:
    from simclr.evaluate.export import export_run

    out = export_run(args.run, args.format, args.out, force=args.force)
    print(f"wrote {out} and {out.with_suffix('.json')} ({args.format}; how to load: docs/python.md)")
    return 0


# ---------------------------------------------------------------- search
def cmd_search(args) -> int:
    from simclr.search.study import run_search

    run_search(args.spec, worker=args.worker, dry_run=args.dry_run, report_only=args.report)
    return 0


def _add_policy(sub) -> None:
    p = sub.add_parser("policy", help="list, validate, or look at augmentation policies")
    p.add_argument("action", choices=["list", "ops", "check", "show"])
    p.add_argument("policy", nargs="?", help="policy YAML path or shipped name")
    p.add_argument("--data", help="dataset path for `show` (default: scikit-learn digits)")
    p.add_argument("--dataset", help="cifar10, cifar100, fashion_mnist, stl10, imagefolder, digits (default: guessed)")
    p.add_argument("--out", default="policy_grid.png")
    p.add_argument("--n", type=int, default=8, help="images (rows)")
    p.add_argument("--views", type=int, default=6, help="augmented samples per image (columns)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_policy)


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a SimCLR encoder")
    p.add_argument("--config", help="run config YAML, or a shipped config by name (digits_cpu, cifar10_cpu, ...)")
    p.add_argument("--resume", help="run directory to continue from its last checkpoint, or 'auto' (with --config): "
                   "continue the run this job started (SLURM job id; outside SLURM the run at name=) or start it")
    p.add_argument("--evaluate", help="after training, evaluate with these protocols, e.g. knn,linear")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.max_epochs=5 policy=x.yaml")
    p.set_defaults(func=cmd_pretrain)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="frozen-feature evaluation of a run or checkpoint")
    p.add_argument("target", help="run directory or .ckpt file")
    p.add_argument("--protocol", default="knn,linear", help=f"comma list of {', '.join(EVAL_PROTOCOLS)}")
    p.add_argument("--data", help="dataset path (default: the run's)")
    p.add_argument("--dataset", help="dataset name (default: the run's)")
    p.add_argument("--plot", action="store_true", help="write the invariance-profile PNG")
    p.add_argument("--no-baselines", action="store_true", help="skip raw-pixel and random-init baselines")
    p.add_argument("overrides", nargs="*", help="data.* / eval.* overrides, e.g. data.test_per_class=100")
    p.set_defaults(func=cmd_evaluate)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's backbone weights for torchvision, timm or simclr")
    p.add_argument("run", help="run directory or .ckpt file")
    p.add_argument("--format", default="torchvision", choices=["torchvision", "timm", "state_dict"])
    p.add_argument("--out", help="weights file (default: RUN/export/backbone-FORMAT.pth); a .json goes beside it")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_export)


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="search an augmentation policy with Optuna (see docs/search.md)")
    p.add_argument("spec", help="search spec YAML")
    p.add_argument("--worker", action="store_true", help="only run trials (extra workers on the same storage)")
    p.add_argument("--dry-run", action="store_true", help="print the space and base policy; run nothing")
    p.add_argument("--report", action="store_true", help="rebuild the outputs from the storage; run nothing")
    p.set_defaults(func=cmd_search)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="simclr", description="SimCLR pretraining, augmentation ablations, evaluation.")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)
    # one function per command, in the order `simclr --help` lists them
    _add_policy(sub)
    _add_pretrain(sub)
    _add_evaluate(sub)
    _add_export(sub)
    add_ablate_parser(sub)
    _add_search(sub)
    return ap


def quiet_library_noise() -> None:
    """Hide third-party notices that say nothing about the user's run."""
    import warnings
    for pattern in (".*LeafSpec.*", ".*overridden `on_(after|before)_batch_transfer`.*", ".*litlogger.*",
                    ".*`srun` command is available on your system but is not used.*",
                    ".*does not have many workers.*", ".*smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage() and "TPU available" not in record.getMessage())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may follow options (`evaluate RUN --data X data.test_per_class=5`)
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if "=" not in e or e.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognised arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    quiet_library_noise()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from simclr.utils import tune_cpu_allocator
    tune_cpu_allocator()
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # train.RunInterrupted says how to resume
        if launcher_rank() == 0:  # every rank of a multi-process run was interrupted; one says so
            print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 143 if getattr(e, "signal_name", "") == "SIGTERM" else 130
    except BrokenPipeError:  # e.g. `simclr policy ops | head`
        return 0


def entry() -> None:
    """The `simclr` command. After an interrupt everything the run needs is on disk (checkpoint, run.json,
    the message): the process leaves at once rather than in interpreter teardown, where gloo's and OpenMP's
    threads can hang or abort it (seen in CI: a Ctrl-C'd run that printed its resume line, then never exited)."""
    code = main()
    if code in (130, 143):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
