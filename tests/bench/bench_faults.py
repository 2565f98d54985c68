#!/usr/bin/env python3
"""The fault-injection suite's long run (issue 11): the same four parts as tests/faults, with
the long counts, printing each part's figures and ending non-zero when any failure was found.

Run as root on a host with dockerd running (tests/run.sh sets one up):
    .venv/bin/python tests/bench/bench_faults.py --long           # 100 kills, 10,000 manifests, abuse x3
    .venv/bin/python tests/bench/bench_faults.py                  # the CI counts: 20, 2,000, x1
    .venv/bin/python tests/bench/bench_faults.py --only fuzz --seed 7
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PARTS = ("sigkill", "fuzz", "abuse", "runtime")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", action="store_true", help="100 SIGKILL rounds, 10,000 manifests, abuse at scale 3")
    ap.add_argument("--only", choices=PARTS, action="append", help="run only these parts (repeatable)")
    ap.add_argument("--seed", type=int, help="replay a run of the SIGKILL and fuzz parts")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end too")
    args = ap.parse_args()
    parts = args.only or list(PARTS)
    if any(p != "fuzz" for p in parts):
        from tests.integration.images import ensure_images

        ensure_images()
    figures: dict[str, object] = {}
    failed: list[str] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp_dir:
        tmp = Path(tmp_dir)
        if "sigkill" in parts:
            from tests.faults import sigkill

            got = sigkill.run(100 if args.long else 20, tmp / "sigkill", args.seed, progress=print)
            print(sigkill.report(got), flush=True)
            figures["sigkill"] = got
            failed += [f"sigkill: {p}" for p in got.get("problems", [])]
        if "fuzz" in parts:
            from tests.faults import fuzz

            got = fuzz.run(10_000 if args.long else 2_000, args.seed)
            print(fuzz.report(got) if hasattr(fuzz, "report") else json.dumps(got, indent=1, default=str), flush=True)
            figures["fuzz"] = got
            failed += [f"fuzz: {f}" for f in got.get("failures", [])]
        if "abuse" in parts:
            from tests.faults import abuse

            (tmp / "abuse").mkdir()
            got = abuse.run(tmp / "abuse", scale=3 if args.long else 1)
            print("API abuse:", json.dumps({k: v for k, v in got.items() if k != "failures"}, default=str), flush=True)
            figures["abuse"] = got
            failed += [f"abuse: {f}" for f in got.get("failures", [])]
        if "runtime" in parts:
            from tests.faults import runtime

            for got in runtime.run(tmp / "runtime"):
                print("runtime fault:", json.dumps(got, default=str), flush=True)
                failed += [f"runtime: {p}" for p in got.get("problems", [])]
            figures["runtime"] = "see above"
    print(f"\nfault-injection {'long ' if args.long else ''}run: {len(failed)} failures in {time.monotonic() - t0:.0f} s")
    for f in failed:
        print("  FAIL", f)
    if args.json:
        print(json.dumps(figures, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
