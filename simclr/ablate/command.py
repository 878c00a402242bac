"""`simclr ablate`: its options and the command (run a spec, `status`/`report DIR`, `plan SPEC`). simclr.cli adds
this parser to the others; everything it does is a function of simclr.ablate a Python user can call."""
from __future__ import annotations

from pathlib import Path

from simclr.config.schema import ConfigError


def _slurm_extra(pairs: list[str]) -> dict:
    extra = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--slurm-arg: '{pair}' is not KEY=VALUE (an sbatch option without its dashes, "
                              "e.g. account=myproj or qos=low).")
        extra[key] = value
    return extra


def cmd_ablate(args) -> int:
    from simclr.ablate import report, run_ablation
    from simclr.ablate.jobs import SlurmOptions

    plan_options = [f"--{k.replace('_', '-')}" for k in ("pilot", "mde", "seeds", "pilot_seeds", "pilot_arm")
                    if getattr(args, k) is not None]
    if args.spec == "plan":
        from simclr.ablate.plan import plan
        if not args.dir:
            raise ConfigError("simclr ablate plan SPEC: give the ablation spec to plan.")
        launch_options = [name for name, used in (("--dry-run", args.dry_run), ("--new-dir", args.new_dir),
                                                  ("--launcher", args.launcher != "inline"), ("--jobs", args.jobs != 1),
                                                  ("--wait", args.wait)) if used]
        if launch_options:
            raise ConfigError(f"{', '.join(launch_options)}: " + ("with --pilot, `simclr ablate plan` launches nothing"
                              if args.pilot else "`simclr ablate plan` runs its pilot in this process")
                              + "; these options go with `simclr ablate SPEC`.")
        plan(args.dir, pilot=args.pilot, mde_points=args.mde, seeds=args.seeds, pilot_seeds=args.pilot_seeds,
             pilot_arm=args.pilot_arm)
        return 0
    if plan_options:
        raise ConfigError(f"{', '.join(plan_options)}: go with `simclr ablate plan SPEC`.")
    if args.spec in ("report", "status"):
        if not args.dir:
            raise ConfigError(f"simclr ablate {args.spec} DIR: give the ablation directory.")
        if args.spec == "status":
            from simclr.ablate.status import print_status
            states = print_status(Path(args.dir))
            return 1 if any(s.state == "failed" for s in states) else 0
        report(Path(args.dir), metric=args.metric, reference=args.reference)
        return 0
    if args.dir:
        raise ConfigError(f"simclr ablate SPEC: unexpected '{args.dir}' after the spec (DIR goes with report/status).")
    _check_launcher_options(args)
    slurm = SlurmOptions(partition=args.partition, time_min=args.time, gpus_per_arm=args.gpus_per_arm,
                         cpus_per_arm=args.cpus_per_arm, mem_gb=args.mem_gb, array_parallelism=args.array_parallelism,
                         extra=_slurm_extra(args.slurm_arg))
    complete = run_ablation(args.spec, dry_run=args.dry_run, launcher=args.launcher, jobs=args.jobs, slurm=slurm,
                            wait=args.wait, new_dir=args.new_dir)
    return 0 if complete or args.dry_run or (args.launcher == "slurm" and not args.wait) else 1


def _check_launcher_options(args) -> None:
    """Options of one launcher given to another would be ignored: refused instead, naming them."""
    slurm_only = [name for name, used in (
        ("--partition", args.partition is not None), ("--time", args.time != 60), ("--gpus-per-arm", args.gpus_per_arm),
        ("--cpus-per-arm", args.cpus_per_arm != 1), ("--mem-gb", args.mem_gb is not None),
        ("--array-parallelism", args.array_parallelism != 64), ("--slurm-arg", args.slurm_arg),
        ("--wait", args.wait)) if used]
    if slurm_only and args.launcher != "slurm":
        raise ConfigError(f"{', '.join(slurm_only)}: go with --launcher slurm; --launcher {args.launcher} runs the arms "
                          "on this machine" + (" (--jobs N of them at once)." if args.launcher == "local" else "."))


def add_ablate_parser(sub) -> None:
    p = sub.add_parser("ablate", help="run an augmentation ablation, `ablate status|report DIR`, or `ablate plan SPEC`")
    p.add_argument("spec", help="ablation spec YAML, or the word `status`, `report` or `plan`")
    p.add_argument("dir", nargs="?", help="with `status` / `report`: the ablation directory; with `plan`: the spec")
    p.add_argument("--dry-run", action="store_true", help="list arms and their resolved policies; run nothing")
    p.add_argument("--new-dir", action="store_true",
                   help="if the spec's directory ran a different spec, continue in a new NAME-N directory")
    p.add_argument("--launcher", default="inline", choices=["inline", "local", "slurm"],
                   help="inline: this process, one arm after another (default); local: --jobs arms at once as "
                        "processes on this machine; slurm: one SLURM job per arm x seed (submitit)")
    p.add_argument("--jobs", type=int, default=1, help="with --launcher local: arms running at once")
    p.add_argument("--wait", action="store_true", help="with --launcher slurm: wait for the jobs, then report")
    g = p.add_argument_group("SLURM (with --launcher slurm)")
    g.add_argument("--partition", help="partition (default: the cluster's default)")
    g.add_argument("--time", type=int, default=60, help="time limit per arm in minutes; a job reaching it is "
                   "checkpointed and requeued (default: 60)")
    g.add_argument("--gpus-per-arm", type=int, default=0, help="GPUs per job (default: 0)")
    g.add_argument("--cpus-per-arm", type=int, default=1, help="CPUs per job (default: 1)")
    g.add_argument("--mem-gb", type=float, help="memory per job in GB (default: the cluster's default)")
    g.add_argument("--array-parallelism", type=int, default=64, help="array tasks running at once (default: 64)")
    g.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-arg account=myproj --slurm-arg qos=low")
    p.add_argument("--metric", help="with `report`: the metric to plot, e.g. knn_k20/top1 (default: linear/top1)")
    p.add_argument("--reference", help="with `report`: the arm paired differences are taken against (default: "
                                       "the spec's `reference`); writes results_vs_ARM.*")
    g = p.add_argument_group("plan (`simclr ablate plan SPEC`: seeds and compute from a pilot's paired spread)")
    g.add_argument("--pilot", metavar="DIR", help="an earlier study directory to take the spread from (default: "
                   "run a pilot into OUTPUT_DIR/NAME-pilot: the reference arm and one other)")
    g.add_argument("--mde", type=float, metavar="POINTS", help="the effect to detect, in accuracy points: prints "
                   "the seeds each comparison needs")
    g.add_argument("--seeds", type=int, metavar="N", help="planned seeds (default: the spec's)")
    g.add_argument("--pilot-seeds", type=int, metavar="N", help="seeds of the pilot this command runs (default: 3)")
    g.add_argument("--pilot-arm", metavar="ARM", help="the arm the pilot compares with the reference (default: the "
                   "spec's first other arm)")
    p.set_defaults(func=cmd_ablate)
