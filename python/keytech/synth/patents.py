"""Stage 6: CNRDS-style patent applications with messy IPC strings.

The key-tech status of every planted invention is decided by ``keytech.ipc.Concordance``
(hierarchical mode, supplement on) and verified over the pool of codes used before formatting.
The plug-in worlds (``w.plugins``) add to the key-tech log-rate and may replace the firms' home
technology buckets."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from keytech import paths
from keytech.ipc import Concordance, normalise_ipc_code
from keytech.synth.columns import frame
from keytech.synth.common import date_str, normalised, random_dates, stage_rng
from keytech.synth.config import FIRST_YEAR
from keytech.synth.vocab import JUNK_IPC, UNIVERSITIES, UNMATCHED_SCODES
from keytech.synth.world import World

# Real IPC subclasses of everyday mechanical/consumer technology; those with any concordance row are
# filtered out at run time (the matcher decides).
_NONKEY_SUBCLASSES = [
    "A21B", "A23G", "A41B", "A41D", "A42B", "A43B", "A44B", "A45C", "A45D", "A46B", "A47B", "A47C",
    "A47F", "A47G", "A47J", "A47K", "A47L", "A63B", "A63H", "B05C", "B08B", "B25B", "B25H", "B26B",
    "B26D", "B27M", "B31B", "B41F", "B42D", "B43K", "B44C", "B60N", "B62B", "B62J", "B65D", "B65F",
    "D03D", "D04B", "D05B", "D06F", "E01C", "E01D", "E03C", "E03D", "E04F", "E05B", "E05D", "E06B",
    "F16B", "F16K", "F16M", "F24C", "F26B", "G07D", "G09D", "G10K",
]
_SUPPLEMENT_CODES = [
    "H01L21/02", "H01L21/027", "H01L21/28", "H01L21/30", "H01L21/56", "H01L21/66", "H01L21/67",
    "H01L21/677", "H01L21/683", "H01L23/00", "H01L23/31", "H01L23/367", "H01L23/48", "H01L23/488",
    "H01L23/544", "H01L25/00", "H01L25/075", "H01L25/16", "H01L27/02", "H01L27/12", "H01L27/146",
    "H01L27/15", "H01L27/32", "H01L29/06", "H01L29/417", "H01L29/66", "H01L29/739", "H01L29/78",
    "H01L29/786", "H01L31/0216", "H01L31/02", "H01L31/18", "H01L33/00", "H01L33/48", "H01L33/50",
    "H01L33/62", "H01L35/32", "H01L43/08", "H01L51/50", "H01L51/52", "H01L51/56",
]
_SUBCLASS_CODES = [  # G16H (pure subclass rule): codes absent from the table
    "G16H10/20", "G16H10/40", "G16H10/60", "G16H10/65", "G16H20/10", "G16H20/13", "G16H20/17",
    "G16H20/30", "G16H20/40", "G16H20/60", "G16H20/70", "G16H30/20", "G16H30/40", "G16H40/20",
    "G16H40/40", "G16H40/60", "G16H40/63", "G16H40/67", "G16H50/20", "G16H50/30", "G16H50/50",
    "G16H50/70", "G16H70/20", "G16H70/60", "G16H80/00",
]
_CLASS_CODES = [  # C08C and G16Z have no rows; their classes C08 and G16 are listed
    "C08C1/02", "C08C1/04", "C08C1/14", "C08C2/02", "C08C2/04", "C08C2/06", "C08C3/00", "C08C4/00",
    "C08C19/00", "C08C19/02", "C08C19/20", "C08C19/22", "C08C19/25", "C08C19/28", "C08C19/30",
    "C08C19/36", "C08C19/44", "G16Z99/00",
]
_EDITIONS = ["(2006.01)", "(2013.01)", "(2020.01)", "(2012.01)"]
_STYLES = ("canonical", "spaced", "edition", "lower", "fullwidth", "zero_padded")
_STYLE_PROBS = (0.55, 0.22, 0.08, 0.04, 0.05, 0.06)
_SEPARATORS = (";", "; ", "；", " ; ")
_SEP_PROBS = (0.70, 0.15, 0.10, 0.05)

_FULLWIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})


@dataclass
class CodePool:
    codes: np.ndarray  # object array of canonical codes
    level: np.ndarray  # intended match level per code ('exact' ... or 'no_rows'/'excluded')
    b_start: np.ndarray
    b_count: np.ndarray
    b_level: np.ndarray  # level index of each bucket
    key_levels: list
    nonkey_levels: list


@dataclass
class PatentTable:
    """The planted patents table, held as arrays per planted application (numbers, dates and
    indices into small vocabularies) and turned into the written strings per block of rows
    (``frame``, ``blocks``): at ``xl`` (≈ 7.6M rows) the whole table as Python strings would take
    several GiB (issue 17). ``src`` maps each written row to its application (an exact duplicate
    row repeats its application); every per-application array is indexed by application."""

    src: np.ndarray  # written row -> application
    scode_vocab: np.ndarray  # the firms' Scode, then the unmatched rows' codes
    name_vocab: np.ndarray  # the firms' full names, then the unmatched rows' applicant names
    subsidiary: np.ndarray  # per firm
    who: np.ndarray  # application -> index into scode_vocab / name_vocab
    firm: np.ndarray  # application -> firm (the borrowed technology profile for unmatched rows)
    kind: np.ndarray  # 0 key invention, 1 non-key invention, 2 utility model, 3 design
    number: np.ndarray  # the 12-digit application number
    check: np.ndarray  # its check digit (10 = X)
    apply_d: np.ndarray
    grant_d: np.ndarray  # NaT when not granted
    cites: np.ndarray
    joint: np.ndarray
    third: np.ndarray
    partner_is_uni: np.ndarray  # the second applicant: a university (else the firm's subsidiary)
    partner_uni: np.ndarray
    partner2_uni: np.ndarray
    code_idx: np.ndarray  # (applications, 6) pool code per IPC position, -1 none
    style: np.ndarray  # (applications, 6) formatting style of each code
    sep: np.ndarray  # separator index per application
    rep: np.ndarray  # main code repeated at the end
    rep_style: np.ndarray
    variants: np.ndarray  # (styles, used codes) the formatted codes
    pos: np.ndarray  # pool code -> column of ``variants``
    ipc_override: dict = field(default_factory=dict)  # application -> IPC string (junk, recoded)

    def __len__(self) -> int:
        return len(self.src)

    def set_ipc(self, apps, values) -> None:
        """Replace the IPC string of these applications (every written row of each)."""
        self.ipc_override.update(zip(np.asarray(apps).tolist(), list(values)))

    def ipc(self, apps: np.ndarray) -> np.ndarray:
        """The IPC strings of these applications (object array)."""
        maxk = self.code_idx.shape[1]
        codes = self.code_idx[apps]
        style = self.style[apps]
        tokens = np.full((len(apps), maxk + 1), "", dtype=object)
        for j in range(maxk):
            has = codes[:, j] >= 0
            tokens[has, j] = self.variants[style[has, j], self.pos[codes[has, j]]]
        rep = self.rep[apps]
        tokens[rep, maxk] = self.variants[self.rep_style[apps][rep], self.pos[codes[rep, 0]]]
        sep = np.array(_SEPARATORS, dtype=object)[self.sep[apps]]
        out = tokens[:, 0].copy()
        for j in range(1, maxk + 1):
            m = tokens[:, j] != ""
            out[m] = out[m] + sep[m] + tokens[m, j]
        if self.ipc_override:
            keys = np.fromiter(self.ipc_override, dtype=np.int64, count=len(self.ipc_override))
            at = np.argsort(keys)
            keys = keys[at]
            k = np.minimum(np.searchsorted(keys, apps), len(keys) - 1)
            hit = keys[k] == apps
            if hit.any():
                values = np.array(list(self.ipc_override.values()), dtype=object)[at]
                out[hit] = values[k[hit]]
        return out

    def apply_no(self, apps: np.ndarray) -> np.ndarray:
        check = self.check[apps]
        check_s = np.where(check == 10, "X", check.astype(str))
        return np.char.add(np.char.add(np.char.add("CN", self.number[apps].astype(str)), "."),
                           check_s).astype(object)

    def frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Written rows ``start:stop`` as the vendor's frame (contract columns)."""
        apps = self.src[start:stop]
        who = self.who[apps]
        uni = np.array(UNIVERSITIES, dtype=object)
        partner = np.where(self.partner_is_uni[apps], uni[self.partner_uni[apps]],
                           self.subsidiary[self.firm[apps]])
        partner2 = uni[self.partner2_uni[apps]]
        partner2 = np.where(partner2 == partner, "中国科学院", partner2)
        applicants = self.name_vocab[who]
        joint, third = self.joint[apps], self.third[apps]
        applicants[joint] = applicants[joint] + ";" + partner[joint]
        applicants[third] = applicants[third] + ";" + partner2[third]
        return frame("patents", {
            "Scode": self.scode_vocab[who], "ApplyNo": self.apply_no(apps),
            "ApplyDate": date_str(self.apply_d[apps]),
            "PatentType": np.array(["发明", "发明", "实用新型", "外观设计"], dtype=object)[self.kind[apps]],
            "IPC": self.ipc(apps), "Applicants": applicants, "GrantDate": date_str(self.grant_d[apps]),
            "CitedTimes": self.cites[apps],
        }).reset_index(drop=True).set_axis(pd.RangeIndex(start, start + len(apps)))

    def blocks(self, rows: int):
        """The written rows as frames of ``rows`` rows each (the last shorter)."""
        for start in range(0, len(self.src), rows):
            yield self.frame(start, start + rows)


def load_concordance() -> Concordance:
    s = paths.seeds_dir()
    return Concordance.from_csv(s / "sei_ipc_concordance.csv", s / "ipc_revision_supplement.csv",
                                mode="hierarchical", use_supplement=True)


def _build_pool(conc: Concordance) -> CodePool:
    """Code buckets (deterministic, seed-independent). Key buckets per subclass and level; non-key
    buckets per subclass."""
    rules = conc.rules_by_code
    listed = sorted(c for c in rules if "/" in c)
    by_sub: dict[str, list[str]] = {}
    for c in listed:
        by_sub.setdefault(c[:4], []).append(c)
    buckets: list[tuple[str, list[str]]] = []  # (level, codes)
    mg_by_sub: dict[str, list[str]] = {}
    for sub, codes in by_sub.items():
        buckets.append(("exact", codes))
        for c in codes:
            if c.endswith("/00"):
                head = c[:-3]
                for sg in ("99", "98", "95", "89", "87", "85"):
                    cand = f"{head}/{sg}"
                    if cand not in rules:
                        mg_by_sub.setdefault(sub, []).append(cand)
                        break
    for sub, codes in mg_by_sub.items():
        buckets.append(("main_group", codes))
    buckets.append(("subclass", [c for c in _SUBCLASS_CODES if c not in rules]))
    buckets.append(("class", [c for c in _CLASS_CODES if c.startswith("C08C")]))
    buckets.append(("class", [c for c in _CLASS_CODES if c.startswith("G16Z")]))
    buckets.append(("supplement", list(_SUPPLEMENT_CODES)))
    # non-key: subclasses without any row (and not under a listed class nor in the supplement)
    sub_rows = conc._subclasses_with_rows
    classes = {c for c in rules if len(c) == 3}
    for sub in _NONKEY_SUBCLASSES:
        if sub in sub_rows or sub[:3] in classes or any(sub.startswith(p) for p in conc.supplement):
            continue
        codes = [f"{sub}{g}/{sg:02d}" for g in (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
                 for sg in (0, 2, 4, 6, 10, 12, 14, 16)]
        buckets.append(("no_rows", codes))
    # excluded: main groups absent under a subclass listed with groups
    listed_groups = {c.split("/")[0] for c in listed}
    for sub in sorted(conc._subclasses_with_groups):
        if sub[:3] in ("C08", "G16"):
            continue
        absent = [g for g in range(1, 100) if f"{sub}{g}" not in listed_groups][:6]
        codes = [f"{sub}{g}/{sg:02d}" for g in absent for sg in (0, 2, 4, 10)]
        if codes:
            buckets.append(("excluded", codes))
    key_levels = ["exact", "main_group", "subclass", "class", "supplement"]
    nonkey_levels = ["no_rows", "excluded"]
    all_levels = key_levels + nonkey_levels
    codes, level, start, count, blevel = [], [], [], [], []
    for lv, cs in buckets:
        start.append(len(codes))
        count.append(len(cs))
        blevel.append(all_levels.index(lv))
        codes.extend(cs)
        level.extend([lv] * len(cs))
    return CodePool(np.array(codes, dtype=object), np.array(level, dtype=object), np.array(start),
                    np.array(count), np.array(blevel), key_levels, nonkey_levels)


def _verify_codes(conc: Concordance, pool: CodePool, used: np.ndarray) -> dict[str, int]:
    """Match every used pool code; assert intended level. Returns counts per level."""
    counts: dict[str, int] = {}
    for i in used:
        code = pool.codes[i]
        lv = pool.level[i]
        got = conc.match(normalise_ipc_code(code)).match_level
        want = "none" if lv in ("no_rows", "excluded") else lv
        if got != want:
            raise AssertionError(f"planted code {code} intended {lv} but matcher says {got}")
        counts[lv] = counts.get(lv, 0) + 1
    return counts


def _variants(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n_styles, n) object array of formatting variants; each normalises to the code."""
    out = np.empty((len(_STYLES), len(codes)), dtype=object)
    ed = rng.choice(_EDITIONS, len(codes))
    for j, c in enumerate(codes):
        head, _, rest = c.partition("/")
        sub, group = head[:4], head[4:]
        out[0, j] = c
        out[1, j] = f"{sub} {group}/{rest}"
        out[2, j] = f"{c}{ed[j]}" if j % 3 else f"{sub} {group}/{rest} {ed[j]}"
        out[3, j] = c.lower()
        out[4, j] = c.translate(_FULLWIDTH)
        out[5, j] = f"{sub}{group.zfill(4)}/{rest}"
        for k in range(len(_STYLES)):
            if normalise_ipc_code(out[k, j]) != c:
                raise AssertionError(f"style {_STYLES[k]} of {c} normalises differently: {out[k, j]}")
    return out


def _draw_codes(rng, pool: CodePool, firm_of: np.ndarray, home: np.ndarray, levels: list,
                level_probs: dict, p_home: float) -> np.ndarray:
    n = len(firm_of)
    if n == 0:
        return np.zeros(0, dtype=int)
    all_levels = pool.key_levels + pool.nonkey_levels
    lv_idx = [all_levels.index(lv) for lv in levels]
    probs = normalised([level_probs[lv] for lv in levels])
    lvl = rng.choice(len(levels), n, p=probs)
    # buckets of each level
    bl = [np.flatnonzero(pool.b_level == li) for li in lv_idx]
    rand_bucket = np.empty(n, dtype=int)
    for k, b in enumerate(bl):
        m = lvl == k
        rand_bucket[m] = b[rng.integers(0, len(b), m.sum())]
    home_bucket = home[firm_of, rng.integers(0, home.shape[1], n)]
    b = np.where(rng.random(n) < p_home, home_bucket, rand_bucket)
    return pool.b_start[b] + (rng.random(n) * pool.b_count[b]).astype(int)


def _home_buckets(rng, pool: CodePool, n_firms: int, levels: list, level_probs: dict, k: int = 3):
    all_levels = pool.key_levels + pool.nonkey_levels
    probs = normalised([level_probs[lv] for lv in levels])
    out = np.empty((n_firms, k), dtype=int)
    lvl = rng.choice(len(levels), (n_firms, k), p=probs)
    for j, lv in enumerate(levels):
        b = np.flatnonzero(pool.b_level == all_levels.index(lv))
        m = lvl == j
        out[m] = b[rng.integers(0, len(b), m.sum())]
    return out


def plant_patents(w: World) -> None:
    rng = stage_rng(w.seed, 7)
    r = w.rates
    firms, fy, cities = w.firms, w.fy, w.cities
    n = len(firms)
    f = fy["firm"].to_numpy()
    year = fy["year"].to_numpy()
    c = fy["city"].to_numpy()
    first_treated = cities["first_treated_year"].to_numpy()
    policy = ((first_treated[c] > 0) & (year >= first_treated[c])).astype(int)
    fy["policy"] = policy
    pilot = firms["pilot"].to_numpy()
    pilot_post = (pilot[f] & (year > firms["pilot_year"].to_numpy()[f])).astype(int)

    # firm effects: levels depend on city size (selection on levels), industry, innovator status
    z = rng.normal(0, 1, n)
    size0 = cities["size"].to_numpy()[firms["city0"].to_numpy()]
    a = (r.key_log_mean + r.firm_sigma * z + r.city_size_loading * size0
         + np.where(firms["manufacturing"].to_numpy(), 0.0, r.nonmanufacturing_shift)
         + np.where(rng.random(n) < r.share_non_innovators, r.non_innovator_shift, 0.0))
    effects = tuple(r.year_effects) + tuple(w.cfg.later_year_effects)
    if len(effects) < w.cfg.last_year - FIRST_YEAR + 1:
        raise ValueError(f"synthetic patents: year effects for {FIRST_YEAR}-{FIRST_YEAR + len(effects) - 1} only, "
                         f"the {w.cfg.name} calendar runs to {w.cfg.last_year}")
    g = np.array(effects)[year - FIRST_YEAR]
    if w.cfg.patent_volume != 1.0:  # the xl scale only: the other scales' draws stay bit-identical
        g = g + np.log(w.cfg.patent_volume)
    eps = rng.normal(0, r.firm_year_noise_sd, (4, len(f)))
    treat = policy * (~pilot[f])
    log_key = a[f] + g + r.beta_key * treat + r.beta_pilot_firm * pilot_post + eps[0]
    for plugin in w.plugins:  # left to right, as one sum
        if plugin.key_log_shift is not None:
            log_key = log_key + plugin.key_log_shift(w, f, year, c, treat)
    lam_key = np.exp(log_key)
    d_nk = r.nonkey_log_ratio + r.nonkey_sigma * rng.normal(0, 1, n)
    lam_nonkey = np.exp(a[f] + d_nk[f] + g + r.beta_nonkey * treat + eps[1])
    d_um = r.utility_log_ratio + r.utility_sigma * rng.normal(0, 1, n)
    lam_um = np.exp(a[f] + d_um[f] + g + r.beta_utility * treat + eps[2])
    d_des = r.design_log_ratio + r.design_sigma * rng.normal(0, 1, n)
    lam_des = np.exp(a[f] + d_des[f] + g + r.beta_design * treat + eps[3])
    n_key = rng.poisson(lam_key)
    n_nonkey = rng.poisson(lam_nonkey)
    n_um = rng.poisson(lam_um)
    n_des = rng.poisson(lam_des)
    fy["n_key"], fy["n_nonkey"], fy["n_um"], fy["n_des"] = n_key, n_nonkey, n_um, n_des

    # one record per planted application: fy index, kind (0 key inv, 1 non-key inv, 2 UM, 3 design)
    fyi = np.concatenate([np.repeat(np.arange(len(f)), k) for k in (n_key, n_nonkey, n_um, n_des)])
    kind = np.concatenate([np.full(k.sum(), j) for j, k in enumerate((n_key, n_nonkey, n_um, n_des))])
    pf = f[fyi]
    pyear = year[fyi]

    # extras: out-of-window applications (2005-2007) of early-listed firms, unmatched firms
    n_total = len(fyi)
    n_oow = max(3, int(round(0.0002 * n_total)))
    early = np.flatnonzero(firms["list_year"].to_numpy() < 2005)
    oow_firm = rng.choice(early, n_oow)
    oow_year = rng.choice([2005, 2006, 2007], n_oow)
    oow_kind = rng.choice(4, n_oow, p=[0.15, 0.2, 0.45, 0.2])
    n_unm = max(3, int(round(0.0002 * n_total)))
    unm_code = rng.choice(UNMATCHED_SCODES, n_unm)
    unm_year = rng.integers(2009, w.cfg.last_year + 1, n_unm)
    unm_kind = rng.choice(4, n_unm, p=[0.15, 0.2, 0.45, 0.2])
    unm_firm = rng.integers(0, n, n_unm)  # borrow a firm's technology profile only

    all_firm = np.concatenate([pf, oow_firm, unm_firm])
    all_year = np.concatenate([pyear, oow_year, unm_year])
    all_kind = np.concatenate([kind, oow_kind, unm_kind])
    origin = np.concatenate([np.zeros(n_total, int), np.ones(n_oow, int), np.full(n_unm, 2)])
    N = len(all_firm)
    scode = firms["stkcd"].to_numpy()[all_firm].astype(object)
    scode[origin == 2] = unm_code

    # --- IPC codes
    conc = load_concordance()
    pool = _build_pool(conc)
    home_key = _home_buckets(rng, pool, n, pool.key_levels, r.key_level_probs)
    home_nk = _home_buckets(rng, pool, n, pool.nonkey_levels, r.nonkey_level_probs)
    for plugin in w.plugins:
        if plugin.home_buckets is not None:
            home_key, home_nk = plugin.home_buckets(w, pool, home_key, home_nk)
    inv = all_kind <= 1
    um = all_kind == 2
    ncodes = np.zeros(N, dtype=int)
    ncodes[inv] = rng.choice(np.arange(1, 7), inv.sum(), p=normalised(r.n_codes_probs))
    ncodes[um] = rng.choice([1, 2, 3], um.sum(), p=[0.55, 0.3, 0.15])
    maxk = 6
    code_idx = np.full((N, maxk), -1, dtype=int)
    for j in range(maxk):
        has = ncodes > j
        if j == 0:
            keydraw = has & (all_kind == 0)
            # utility models: main code from the key pool 40% of the time
            keydraw |= has & um & (rng.random(N) < 0.4)
        else:
            keydraw = has & (all_kind == 0) & (rng.random(N) < r.p_key_secondary_code)
            keydraw |= has & um & (rng.random(N) < 0.4)
        nkdraw = has & ~keydraw
        code_idx[keydraw, j] = _draw_codes(rng, pool, all_firm[keydraw], home_key, pool.key_levels,
                                           r.key_level_probs, r.p_home_bucket)
        code_idx[nkdraw, j] = _draw_codes(rng, pool, all_firm[nkdraw], home_nk, pool.nonkey_levels,
                                          r.nonkey_level_probs, r.p_home_bucket)
    used = np.unique(code_idx[code_idx >= 0])
    level_counts = _verify_codes(conc, pool, used)
    main_levels = pd.Series(pool.level[code_idx[all_kind == 0, 0]]).value_counts()
    # sanity: key patents' main code is key; non-key inventions carry no key code
    is_keycode = np.isin(pool.level, pool.key_levels)
    assert is_keycode[code_idx[all_kind == 0, 0]].all()
    nk_codes = code_idx[all_kind == 1]
    assert not is_keycode[nk_codes[nk_codes >= 0]].any()

    # --- messy formatting (after verification; every variant normalises to the same code). The
    # strings are built per block of written rows (PatentTable.frame); here only the draws, which
    # stay those of the whole table in the same order.
    var = _variants(pool.codes[used], rng)
    pos = np.full(len(pool.codes), -1, dtype=int)
    pos[used] = np.arange(len(used))
    row_style = rng.choice(len(_STYLES), N, p=normalised(_STYLE_PROBS))
    sep = rng.choice(len(_SEPARATORS), N, p=normalised(_SEP_PROBS)).astype(np.int8)
    sep[row_style == 4] = _SEPARATORS.index("；")
    style = np.zeros((N, maxk), dtype=np.int8)  # style of each code (where code_idx >= 0)
    for j in range(maxk):
        style[:, j] = np.where(rng.random(N) < 0.1, rng.integers(0, len(_STYLES), N), row_style)
    # repeated codes: the main code again, in another style, at the end
    rep = (ncodes >= 1) & (ncodes < maxk) & (rng.random(N) < 0.03)
    rep_style = ((row_style + 1 + rng.integers(0, len(_STYLES) - 1, N)) % len(_STYLES)).astype(np.int8)
    # junk IPC strings on a few non-key inventions
    nk_rows = np.flatnonzero((all_kind == 1) & (origin == 0))
    n_junk = max(5, int(round(0.0003 * len(nk_rows))))
    junk_rows = np.sort(rng.choice(nk_rows, n_junk, replace=False))
    junk_values = rng.choice(np.array(JUNK_IPC, dtype=object), n_junk)

    # --- dates, numbers, applicants, grants, citations
    apply_d = random_dates(all_year, rng)
    type_digit = np.array([1, 1, 2, 3])[all_kind]
    group_key = all_year * 10 + type_digit
    perm = rng.permutation(N)
    order = np.lexsort((perm, group_key))
    del perm
    gk_sorted = group_key[order]
    first_of_group = np.r_[True, gk_sorted[1:] != gk_sorted[:-1]]
    grp_start = np.maximum.accumulate(np.where(first_of_group, np.arange(N), 0))
    rank = np.empty(N, dtype=np.int64)
    rank[order] = np.arange(N) - grp_start
    del gk_sorted, first_of_group, grp_start, order, group_key
    serial = 10000 + rank * 7 + rng.integers(0, 7, N)
    del rank
    number = all_year.astype(np.int64) * 10**8 + type_digit * 10**7 + serial
    del serial
    check = np.zeros(N, dtype=np.int64)  # weighted digit sum mod 11 (digit k from the left: weight)
    for k, weight in zip(range(11, -1, -1), (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)):
        check += ((number // 10**k) % 10) * weight
    check = (check % 11).astype(np.int8)

    p_joint = np.array([r.p_joint_invention, r.p_joint_invention, r.p_joint_utility, r.p_joint_design])[all_kind]
    joint = rng.random(N) < p_joint
    third = joint & (rng.random(N) < r.p_third_applicant)
    unm_names = np.array([f"{code}号非上市公司有限公司" for code in unm_code], dtype=object)
    partner_is_uni = rng.random(N) < 0.5  # else the firm's subsidiary
    partner_uni = rng.integers(0, len(UNIVERSITIES), N).astype(np.int16)
    partner2_uni = rng.integers(0, len(UNIVERSITIES), N).astype(np.int16)

    extraction = np.datetime64(w.cfg.extraction_date)
    lag_inv = np.clip(r.invention_grant_lag_years[0] + rng.gamma(2.0, 0.6, N),
                      r.invention_grant_lag_years[0], r.invention_grant_lag_years[1])
    lag_days = np.where(inv, lag_inv * 365.25,
                        np.where(um, rng.uniform(120, 400, N), rng.uniform(90, 300, N))).astype(int)
    del lag_inv
    p_grant = np.array([r.p_grant_invention, r.p_grant_invention, r.p_grant_utility, r.p_grant_design])[all_kind]
    grant_d = apply_d + lag_days
    granted = (rng.random(N) < p_grant) & (grant_d <= extraction)
    grant_d = np.where(granted, grant_d, np.datetime64("NaT"))
    age = (extraction - apply_d).astype(int) / 365.25
    quality = np.exp(rng.normal(0, 0.8, n))[all_firm]
    cite_rate = np.array([r.citations_per_year_invention, r.citations_per_year_invention,
                          r.citations_per_year_utility, 0.0])[all_kind]
    mean_cites = cite_rate * quality * np.maximum(age - 0.5, 0) * np.where(granted | um, 1.0, 0.4)
    cites = rng.poisson(rng.gamma(1.5, mean_cites / 1.5 + 1e-12))
    del age, quality, cite_rate, mean_cites, lag_days, p_grant, p_joint

    # Scode and first applicant: indices into the firms' values followed by the unmatched rows'
    scode_vocab = np.concatenate([firms["stkcd"].to_numpy().astype(object), unm_code.astype(object)])
    name_vocab = np.concatenate([firms["full"].to_numpy().astype(object), unm_names])
    who = all_firm.astype(np.int32)
    who[origin == 2] = n + np.arange(n_unm, dtype=np.int32)
    # exact duplicate rows; written order: by Scode (as text), application date, then planted row
    n_dup = max(5, int(round(0.003 * N)))
    dup_rows = np.sort(rng.choice(N, n_dup, replace=False))
    sort_date = np.r_[apply_d, apply_d[dup_rows]].astype(np.int64)
    idx = np.r_[np.arange(N), dup_rows]
    _, scode_rank = np.unique(scode_vocab.astype(str), return_inverse=True)
    order = np.lexsort((idx, sort_date, scode_rank[np.r_[who, who[dup_rows]]]))
    del sort_date
    table = PatentTable(
        src=idx[order], scode_vocab=scode_vocab, name_vocab=name_vocab,
        subsidiary=firms["subsidiary"].to_numpy().astype(object), who=who,
        firm=all_firm.astype(np.int32), kind=all_kind.astype(np.int8), number=number, check=check,
        apply_d=apply_d, grant_d=grant_d, cites=cites.astype(np.int64), joint=joint, third=third,
        partner_is_uni=partner_is_uni, partner_uni=partner_uni, partner2_uni=partner2_uni,
        code_idx=code_idx.astype(np.int32), style=style, sep=sep, rep=rep, rep_style=rep_style,
        variants=var, pos=pos)
    del code_idx, style
    table.set_ipc(junk_rows, junk_values)
    w.patent_table = table
    # planted status aligned with the written rows (for tests): kind 0 key invention, 1 non-key
    # invention, 2 utility model, 3 design; origin 0 planted, 1 out of window, 2 unmatched firm
    w.patents_kind = np.r_[all_kind, all_kind[dup_rows]][order]
    w.patents_origin = np.r_[origin, origin[dup_rows]][order]
    w.patents_duplicate = np.r_[np.zeros(N, bool), np.ones(n_dup, bool)][order]

    # --- truth
    w.patent_truth = {
        "rows_planted_in_window": int(n_total),
        "exact_duplicate_rows": int(n_dup),
        "junk_ipc_rows": int(n_junk),
        "junk_ipc_values": sorted(set(junk_values.tolist())),
        "unmatched_firm_rows": int(n_unm),
        "unmatched_scodes": sorted(set(unm_code.tolist())),
        "out_of_window_rows": int(n_oow),
        "out_of_window_years": sorted(set(oow_year.tolist())),
        "repeated_code_rows": int(rep.sum()),
        "row_styles": {s: int(((row_style == k) & (ncodes > 0)).sum()) for k, s in enumerate(_STYLES)},
        "fullwidth_rows": int(((row_style == 4) & (ncodes > 0)).sum()),
        "joint_rows": int(joint.sum()),
        "by_type_after_dedup": {
            "invention_key": int((all_kind == 0).sum()), "invention_nonkey": int((all_kind == 1).sum()),
            "utility_model": int((all_kind == 2).sum()), "design": int((all_kind == 3).sum()),
        },
        "key_main_code_levels": {k: int(v) for k, v in main_levels.sort_index().items()},
        "distinct_codes_used_by_level": dict(sorted(level_counts.items())),
        "granted_rows": int(granted.sum()),
    }
    w.patent_rows = {"origin": origin, "kind": all_kind, "year": all_year, "firm": all_firm,
                     "joint": joint, "granted": granted, "junk": np.isin(np.arange(N), junk_rows)}

