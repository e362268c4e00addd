"""Freeze and compare what `make demo` produces, to prove a refactor changes nothing.

    python tests/tools/demo_snapshot.py freeze  [--db data/warehouse.duckdb] OUT.json
    python tests/tools/demo_snapshot.py compare OLD.json NEW.json [--rtol 1e-10]

`freeze` records, from the warehouse, the content fingerprint of every table in the marts schema
(keytech.warehouse.mart_fingerprint, one mart at a time) and every (spec, term) of the newest
estimation run: estimate, std_error, p_value, nobs. `compare` reports marts whose fingerprint
differs, specs/terms present on one side only, N that differ, and numbers whose relative
difference exceeds --rtol (default 1e-10; placebo draws compared the same way). Exit 1 on any
difference. Used by the behaviour-preserving refactors of issues 13 and 17; not part of make test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import duckdb

from keytech.warehouse import mart_fingerprint


def freeze(db: Path, out: Path) -> None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        marts = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = 'marts' order by 1").fetchall()]
        fingerprints = {m: mart_fingerprint(con, (m,)) for m in marts}
        run_id = con.execute("select run_id from results.runs order by started_at desc limit 1").fetchone()[0]
        rows = con.execute("select spec_id, term, estimate, std_error, p_value, nobs from results.estimates "
                           "where run_id = ? order by 1, 2", [run_id]).fetchall()
    finally:
        con.close()
    estimates = {f"{s}|{t}": {"estimate": e, "std_error": se, "p_value": p, "nobs": n} for s, t, e, se, p, n in rows}
    out.write_text(json.dumps({"db": str(db), "run_id": run_id, "marts": fingerprints, "estimates": estimates},
                              indent=1, sort_keys=True, default=str), encoding="utf-8")
    print(f"{out}: {len(fingerprints)} marts, {len(estimates)} (spec, term) rows of run {run_id}")


def _differs(a, b, rtol: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return False
    return abs(a - b) > rtol * max(abs(a), abs(b), 1e-300)


def compare(old: Path, new: Path, rtol: float) -> int:
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (old, new))
    problems = []
    for m in sorted(set(a["marts"]) | set(b["marts"])):
        if a["marts"].get(m) != b["marts"].get(m):
            problems.append(f"mart {m}: fingerprint {a['marts'].get(m)} -> {b['marts'].get(m)}")
    ea, eb = a["estimates"], b["estimates"]
    for key in sorted(set(ea) ^ set(eb)):
        problems.append(f"{key}: only in {'old' if key in ea else 'new'}")
    worst = 0.0
    for key in sorted(set(ea) & set(eb)):
        if ea[key]["nobs"] != eb[key]["nobs"]:
            problems.append(f"{key}: nobs {ea[key]['nobs']} -> {eb[key]['nobs']}")
        for field in ("estimate", "std_error", "p_value"):
            x, y = ea[key][field], eb[key][field]
            if _differs(x, y, rtol):
                problems.append(f"{key}: {field} {x!r} -> {y!r}")
            elif x is not None and y is not None and not (isinstance(x, float) and math.isnan(x)):
                worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-300))
    print(f"{len(ea)} vs {len(eb)} (spec, term) rows; {len(a['marts'])} vs {len(b['marts'])} marts; "
          f"largest relative difference within tolerance {worst:.3g}")
    for line in problems:
        print("  " + line)
    print("IDENTICAL" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("freeze", help="write the snapshot of a warehouse")
    f.add_argument("out", type=Path)
    f.add_argument("--db", type=Path, default=Path("data/warehouse.duckdb"))
    c = sub.add_parser("compare", help="compare two snapshots")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    c.add_argument("--rtol", type=float, default=1e-10)
    args = parser.parse_args(argv)
    if args.command == "freeze":
        freeze(args.db, args.out)
        return 0
    return compare(args.old, args.new, args.rtol)


if __name__ == "__main__":
    sys.exit(main())
