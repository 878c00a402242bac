"""Re-run a finished search's best-vs-base comparison on test with the current code, from its committed
outputs alone (spec.yaml, base_policy.yaml, best_policy.yaml, summary.json), without re-running the trials.

    python scripts/rerun_search_final.py docs/searches/digits_rotation --work results/searches/digits_rotation-final

The comparison is the search's own `final_comparison` (an ordinary two-arm ablation over `final.seeds`) run
in `--work` (a new directory, or one this script made for the same policies: the comparison resumes there). The committed directory then gets the new `comparison.json`,
`final_results.{md,json}` (the ablation's report) and `summary.{json,md}` with its `final` section replaced;
`summary.json` records the git commit the comparison ran at.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from simclr.search.final import final_comparison
from simclr.search.report import summary_markdown
from simclr.search.spec import load_search_spec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("committed", type=Path, help="a search's committed outputs (docs/searches/NAME)")
    ap.add_argument("--work", type=Path, required=True, help="new directory for the comparison's runs")
    ap.add_argument("--spec-dir", type=Path, default=Path("."),
                    help="the folder the committed spec.yaml's relative base_config lies in: its original spec's "
                         "(configs/searches for a copy of a shipped spec). Default: the working directory, for the "
                         "copies committed before base_config was relative to the spec (run from the repository root)")
    args = ap.parse_args(argv)
    spec = load_search_spec(args.committed / "spec.yaml", relative_to=args.spec_dir)
    summary = json.loads((args.committed / "summary.json").read_text())
    names = ("base_policy.yaml", "best_policy.yaml")
    if args.work.exists():  # resume (the ablation skips finished runs) only a comparison of these same policies
        if any(not (args.work / n).is_file() or (args.work / n).read_text() != (args.committed / n).read_text()
               for n in names):
            sys.exit(f"error: --work {args.work}: exists and is not a rerun of {args.committed}'s policies; "
                     "give a new directory (nothing is overwritten).")
    else:
        (args.work / "policies").mkdir(parents=True)
        for name in names:
            shutil.copy(args.committed / name, args.work / name)
    best = int(summary["best"]["trial"])
    final = final_comparison(spec, args.work, best, run=True)
    report = args.work / f"final-trial-{best:04d}"
    shutil.copy(args.work / "comparison.json", args.committed / "comparison.json")
    for ext in ("md", "json"):
        shutil.copy(report / f"results.{ext}", args.committed / f"final_results.{ext}")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    summary["final"] = final | {"rerun_at_commit": commit, "rerun_by": "scripts/rerun_search_final.py"}
    (args.committed / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (args.committed / "summary.md").write_text(summary_markdown(spec, summary))
    print(summary_markdown(spec, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
