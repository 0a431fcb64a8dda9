"""The README's results tables quote only committed JSONs: every number in them is found in the JSONs their
paragraph cites (rounded as printed, in the unit printed: G, M, k, ms, µs, %)."""
import json
import re

import numpy as np
import pytest

from pruning_utils.config import REPO_ROOT

NUMBER = re.compile(r"(?<![\w.])[-+−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
UNITS = {"G": 1e9, "M": 1e6, "k": 1e3, "ms": 1e-3, "µs": 1e-6, "%": 1e-2}  # a printed unit: the value's scale
CITED = re.compile(r"(figures/[\w.\-*]+\.json)|`(_[\w.\-]+)\.json`")  # a path, or a suffix to the last path


def _results():
    text = (REPO_ROOT / "README.md").read_text()
    return text[text.index("## Results"):]


def _tables():
    """(cited JSON paths, table rows) for every table of the results section: the files named in the paragraphs
    since the last bold heading (``_suffix.json``: the last path named with that suffix instead of its own)."""
    cited, tables, table, last = [], [], None, ""
    for line in _results().split("\n"):
        if line.startswith("|"):
            if table is None:
                table = (list(cited), [])
                tables.append(table)
            table[1].append(line)
            continue
        table = None
        if line.startswith("**") or line.startswith("#"):
            cited = []
        for full, suffix in CITED.findall(line):
            if full:
                cited += [str(p.relative_to(REPO_ROOT)) for p in sorted(REPO_ROOT.glob(full))]
                last = full
            elif last:
                cited.append(re.sub(r"(_[a-z_]+)?\.json$", "", last.split("*")[0]) + suffix + ".json")
    return tables


def _numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v) + _numbers(_as_number(k))]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return []


def _as_number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _found(value: float, tol: float, pool: np.ndarray) -> bool:
    """``value`` (give or take ``tol``, its rounding) is a number of ``pool``."""
    return bool(np.any(np.abs(pool - value) <= tol + 1e-9 * max(1.0, abs(value))))


def _cells(header: str, row: str):
    """(value, rounding, scale) of every number printed in the row's cells of numbers (a cell of words, as the
    row's name, is skipped); a unit in the cell, or else in its column's header, gives the scale."""
    names = [c.strip() for c in header.strip().strip("|").split("|")]
    for name, cell in zip(names, [c.strip() for c in row.strip().strip("|").split("|")]):
        if re.sub(r"µs|ms|dB|\b[GMks]\b|[\d.,eE+\-−/→>()%x ]", "", cell):
            continue
        column_unit = re.search(r"\b(ms|µs)\b", name)
        for match in NUMBER.finditer(cell):
            printed = match.group().replace(",", "").replace("−", "-")
            unit = re.match(r"\s?(µs|ms|[GMk%])", cell[match.end():]) or column_unit
            decimals = len(printed.split(".")[1].split("e")[0]) if "." in printed else 0
            exponent = int(printed.split("e")[1]) if "e" in printed else 0
            yield float(printed), 0.5 * 10.0 ** (exponent - decimals), UNITS[unit.group(1)] if unit else 1.0


TABLES = _tables()


@pytest.mark.parametrize("cited, rows", TABLES, ids=[f"table{i}" for i in range(len(TABLES))])
def test_results_table_numbers_are_in_the_cited_jsons(cited, rows):
    assert cited, f"the paragraph above this table cites no committed JSON: {rows[0]}"
    missing_files = [f for f in cited if not (REPO_ROOT / f).is_file()]
    assert not missing_files, f"cited but not committed: {missing_files}"
    pool = np.array([n for f in cited for n in _numbers(json.loads((REPO_ROOT / f).read_text()))])
    missing = []
    for row in rows[2:]:
        for value, rounding, scale in _cells(rows[0], row):
            if not (_found(value, rounding, pool) or _found(value * scale, rounding * scale, pool)):
                missing.append((row.split("|")[1].strip(), value))
    assert not missing, f"numbers in no cited JSON ({cited}): {missing}"
