"""The data checks of two dbt manifests as sets of (resource, column(s), rule, arguments, severity,
where) rows, every merged test expanded rule by rule, and their difference: proves that merging
tests into fewer nodes (issue 17: column_checks holds a model's grain, column rules,
relationships, row-count and expression rules) kept the same checks. Singular tests compare by
name and SQL. Usage:
    python tests/tools/dbt_checks_set.py BEFORE/target/manifest.json AFTER/target/manifest.json
Prints the counts per rule and every check found on one side only; exit code 1 when they differ."""
import json, sys

def norm(v):
    if isinstance(v, list): return tuple(norm(x) for x in v)
    if isinstance(v, dict): return tuple(sorted((k, norm(x)) for k, x in v.items()))
    return str(v)

def checks(path):
    m = json.load(open(path))
    out = []
    for n in m["nodes"].values():
        if n["resource_type"] != "test": continue
        sev, where = n["config"]["severity"].lower(), n["config"].get("where")
        tm = n.get("test_metadata")
        if not tm:
            out.append(("singular", n["name"], "singular", norm(n["raw_code"]), sev, where)); continue
        att = n.get("attached_node") or (n.get("depends_on", {}).get("nodes") or ["?"])[0]
        res = att.split(".")[-1] if "source." not in att else att.replace("source.keytech.", "source:")
        k = dict(tm["kwargs"]); name = tm["name"]
        k.pop("model", None)
        def add(col, rule, args=None): out.append((res, col if isinstance(col, str) or col is None else ", ".join(col), rule, norm(args), sev, where))
        if name == "column_checks":
            for c in k.get("not_null") or []: add(c, "not_null")
            for c in k.get("unique") or []: add(c, "unique")
            for a in k.get("accepted_values") or []: add(a["column"], "accepted_values", {"values": a["values"], "quote": a.get("quote", True)})
            for a in k.get("accepted_range") or []: add(a["column"], "accepted_range", {"min_value": a.get("min_value"), "max_value": a.get("max_value")})
            if k.get("primary_key"): add(k["primary_key"], "primary_key")
            for c in k.get("unique_combination") or []: add(c, "unique_combination")
            for a in k.get("relationships") or []: add(a["column"], "relationships", {"to": a["to"], "field": a["field"]})
            for a in k.get("expression_is_true") or []: add(None, "expression_is_true", {"expression": a["expression"], "where_clause": a.get("where_clause")})
            for a in k.get("equal_row_count") or []: add(None, "equal_row_count", {"compare_model": a["compare_model"], "compare_where": a.get("compare_where")})
        elif name == "primary_key": add(k["columns"], "primary_key")
        elif name == "unique_combination_of_columns": add(k["combination_of_columns"], "unique_combination")
        elif name == "relationships": add(k["column_name"], "relationships", {"to": k["to"], "field": k["field"]})
        elif name == "expression_is_true": add(None, "expression_is_true", {"expression": k["expression"], "where_clause": k.get("where_clause")})
        elif name == "equal_row_count": add(None, "equal_row_count", {"compare_model": k["compare_model"], "compare_where": k.get("compare_where")})
        elif name == "accepted_values": add(k["column_name"], "accepted_values", {"values": k["values"], "quote": k.get("quote", True)})
        else: add(k.get("column_name"), name, {a: b for a, b in k.items() if a != "column_name"})
    return out, sum(1 for n in m["nodes"].values() if n["resource_type"] == "test")

(b, nb), (a, na) = checks(sys.argv[1]), checks(sys.argv[2])
from collections import Counter
cb, ca = Counter(b), Counter(a)
print(f"before: {nb} test nodes, {len(b)} checks ({len(cb)} distinct); after: {na} test nodes, {len(a)} checks ({len(ca)} distinct)")
rules = Counter(r[2] for r in b)
print("checks by rule (before):", dict(sorted(rules.items())))
print("checks by rule (after): ", dict(sorted(Counter(r[2] for r in a).items())))
only_b, only_a = cb - ca, ca - cb
for r in sorted(only_b, key=str): print("ONLY BEFORE", r[:4] if r[2] != "singular" else r[:2], r[4:])
for r in sorted(only_a, key=str): print("ONLY AFTER ", r[:4] if r[2] != "singular" else r[:2], r[4:])
print("IDENTICAL SETS" if not only_b and not only_a else f"DIFFERENT: {sum(only_b.values())} only before, {sum(only_a.values())} only after")
sys.exit(1 if only_b or only_a else 0)
