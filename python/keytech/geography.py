"""City and county names valid by year → one consistent prefecture geography (the panel's cities).

Input: ``seeds/admin_division_codes.csv`` — the history of every county-level-and-above division
code 1981–2024 (a re-headed copy of the public CC0 table, see seeds/PROVENANCE-admin-division-codes.md)
— and ``seeds/cn_prefecture_cities.csv`` (the panel's prefecture-level cities, current codes).
Output: ``seeds/city_name_history.csv``, one row per name a record may print for a division in the
years it was in use, with the panel city it belongs to. ``keytech.geography.write_city_name_history``
regenerates it; a test keeps the committed seed equal to the regenerated one. dbt's
``int_city_names_unioned`` reads it (priority after the official names and their short forms), so a
firm or yearbook record that names the unit valid in *its* year (襄樊 before 2010, 巢湖 until 2011,
铜仁地区 until 2011, 莱芜 until 2018, a county such as 浦东新区) lands in one consistent prefecture.

Rule (``panel_city_of``), applied to a division code until it reaches a panel city:
1. a code that is a panel city is itself (a renamed unit that kept its code, e.g. 襄樊市 420600);
2. a county-level code belongs to its prefecture (first four digits + ``00``; ``xx0000`` for the
   four municipalities), which is resolved in turn;
3. an abolished or re-coded prefecture follows its successor code(s) in the table (the first
   listed);
4. without a listed successor, the panel city of the same province with the same name stem (铜仁地区
   → 铜仁市, a 地区 re-designated a city with a new code);
5. otherwise the prefecture that received its seat: the lowest-coded abolished district or county
   under it that lists a successor (巢湖市 → 居巢区 → 巢湖市 340181 under 合肥市; 莱芜市 → 莱城区 →
   济南市). An abolished unit split among several prefectures is thus mapped to one of them,
   documented in the ``rule`` column.
Names that resolve to no panel city (e.g. counties directly under a province that is not itself a
panel city) are left out: records printing them stay unmatched and are quarantined
(``unknown_city``). A name that maps to two panel cities in the same year is ambiguous there (e.g.
county names such as 市中区) and dbt leaves it unmatched in that year.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from keytech import paths

MUNICIPALITY_PREFIXES = ("11", "12", "31", "50")
SUFFIXES = re.compile(r"(自治州|地区|盟|市|自治县|县|区|旗|自治旗|林区|特区)$")
OPEN_END = 9999
HISTORY_COLUMNS = ["lookup_name", "valid_from", "valid_until", "division_code", "division_level", "city_code",
                   "rule"]


def _stem(name: str) -> str:
    return re.sub(r"(自治州|地区|盟|市)$", "", name)


def load_divisions(path: Path | None = None) -> list[dict]:
    path = path or paths.seeds_dir() / "admin_division_codes.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def load_panel_cities(path: Path | None = None) -> dict[str, dict]:
    path = path or paths.seeds_dir() / "cn_prefecture_cities.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["city_code"]: row for row in csv.DictReader(handle)}


def _successors(row: dict) -> list[str]:
    return [re.sub(r"\[\d{4}\]$", "", s.strip()) for s in (row.get("successor_codes") or "").split(";") if s.strip()]


def panel_city_of(code: str, divisions: list[dict], panel: dict[str, dict], depth: int = 0) -> tuple[str, str] | None:
    """(panel city code, rule) a division code belongs to, or None (see the module docstring)."""
    if depth > 6:
        return None
    if code in panel:
        return code, "same code" if depth == 0 else "successor"
    rows = [r for r in divisions if r["code"] == code]
    level = rows[0]["level"] if rows else ("county" if not code.endswith("00") else "prefecture")
    if level == "county":
        parent = code[:2] + "0000" if code[:2] in MUNICIPALITY_PREFIXES else code[:4] + "00"
        found = panel_city_of(parent, divisions, panel, depth + 1)
        return (found[0], "county in its prefecture") if found else None
    if level != "prefecture":
        return None
    for row in sorted(rows, key=lambda r: r["valid_from"], reverse=True):
        for successor in _successors(row):
            found = panel_city_of(successor, divisions, panel, depth + 1)
            if found:
                return found[0], "successor code"
    for row in rows:
        same_stem = [c for c, city in panel.items() if city["province_code"] == code[:2]
                     and _stem(city["city_name"]) == _stem(row["name"])]
        if len(same_stem) == 1:
            return same_stem[0], "re-designated under a new code (same name stem)"
    seats = sorted((r for r in divisions if r["level"] == "county" and r["code"].startswith(code[:4])
                    and r["code"] != code and r["status"] == "弃用" and _successors(r)), key=lambda r: r["code"])
    for seat in seats:
        found = panel_city_of(_successors(seat)[0], divisions, panel, depth + 1)
        if found:
            return found[0], f"abolished; mapped to the prefecture that received its seat {seat['name']}"
    return None


def city_name_history(divisions: list[dict] | None = None, panel: dict[str, dict] | None = None) -> list[dict]:
    """Every prefecture- and county-level name with its years of use and its panel city."""
    divisions = divisions if divisions is not None else load_divisions()
    panel = panel if panel is not None else load_panel_cities()
    cache: dict[str, tuple[str, str] | None] = {}
    out: list[dict] = []
    for row in divisions:
        if row["level"] not in ("prefecture", "county"):
            continue
        if row["code"] not in cache:
            cache[row["code"]] = panel_city_of(row["code"], divisions, panel)
        found = cache[row["code"]]
        if found is None:
            continue
        names = [row["name"]]
        if row["level"] == "prefecture" and _stem(row["name"]) != row["name"] and len(_stem(row["name"])) >= 2:
            names.append(_stem(row["name"]))
        for name in names:
            out.append({
                "lookup_name": name,
                "valid_from": int(row["valid_from"]),
                "valid_until": int(row["valid_until"]) if row["valid_until"] else OPEN_END,
                "division_code": row["code"],
                "division_level": row["level"],
                "city_code": found[0],
                "rule": found[1],
            })
    unique = {tuple(r[c] for c in HISTORY_COLUMNS): r for r in out}
    return sorted(unique.values(), key=lambda r: (r["division_code"], r["valid_from"], r["lookup_name"]))


def write_city_name_history(target: Path | None = None) -> Path:
    target = target or paths.seeds_dir() / "city_name_history.csv"
    with open(target, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(city_name_history())
    return target
