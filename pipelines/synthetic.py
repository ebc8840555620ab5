"""A realistic, seeded generator of used-car listings (no real data set can be fetched here).

Features are drawn jointly: each listing picks a brand (by market share) and one of its model
lines, which fixes body, seats, doors and a list price; fuel depends on body and age; engine,
power and torque follow from model and fuel; diesels run more kilometres per year; automatics
are commoner in newer and pricier cars; older cars have had more owners.

The price formula (EUR), with ``age = REFERENCE_YEAR - year``::

    log(price_clean) = log(price_new)                       # model line, petrol base trim
                     + 0.45 * log(power / typical_power)    # stronger engine, higher trim
                     - depreciation[tier] * age             # 9-13 % a year
                     - 0.22 * log1p(km_driven / 40_000)     # wear
                     + fuel[fuel_type] + gearbox[transmission]
                     + owners[owner_type] + seller[seller_type] + colour[color]
    selling_price = price_clean * exp(N(0, NOISE_SIGMA))     # multiplicative noise

``NOISE_SIGMA`` is 0.10, so the irreducible error is about 10 % of the price. Missing values
(2-6 %) are punched into seven columns after the price is computed, as in scraped listings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_path
from pipelines.catalog import CATALOG, COLORS, FUEL_TYPES, OWNER_TYPES, SELLER_TYPES
from pipelines.contract import CATEGORICAL, FEATURES, NUMERICAL, TARGET

REFERENCE_YEAR = 2026
NOISE_SIGMA = 0.10

DEPRECIATION = {"budget": 0.095, "mainstream": 0.10, "premium": 0.12, "luxury": 0.11}
FUEL_EFFECT = {"Petrol": 0.0, "Diesel": 0.06, "Hybrid": 0.12, "LPG": -0.10}
GEARBOX_EFFECT = {"Manual": 0.0, "Automatic": 0.07}
OWNER_EFFECT = {"First": 0.0, "Second": -0.05, "Third": -0.10, "Fourth & Above": -0.17}
SELLER_EFFECT = {"Private": 0.0, "Dealer": 0.05, "Trustmark Dealer": 0.08}
COLOR_EFFECT = {c: 0.0 for c in COLORS} | {"Yellow": -0.06, "Orange": -0.05, "Green": -0.03}
SPECIFIC_POWER = {"Petrol": 78.0, "Diesel": 62.0, "Hybrid": 85.0, "LPG": 70.0}  # bhp per litre
TORQUE_PER_BHP = {"Petrol": 1.55, "Diesel": 2.45, "Hybrid": 1.9, "LPG": 1.45}
TIER_POWER = {"budget": 0.92, "mainstream": 1.0, "premium": 1.15, "luxury": 1.45}

MISSING_RATES = {
    "mileage_kmpl": 0.05,
    "engine_cc": 0.03,
    "max_power_bhp": 0.04,
    "torque_nm": 0.06,
    "seats": 0.02,
    "body_type": 0.03,
    "owner_type": 0.025,
}


@dataclass(frozen=True)
class Sample:
    """Generated listings and the noise-free price of each (for measuring irreducible error)."""

    listings: pd.DataFrame
    clean_price: np.ndarray


def _pick(rng: np.random.Generator, options: tuple[str, ...], p: np.ndarray) -> np.ndarray:
    """Draw one option per row from row-wise probabilities ``p`` (rows x options)."""
    cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(len(p))[:, None]
    idx = np.minimum((u > cum).sum(axis=1), len(options) - 1)
    chosen: np.ndarray = np.asarray(options, dtype=object)[idx]
    return chosen


def generate(rows: int, seed: int) -> Sample:
    """Generate ``rows`` listings; the same ``seed`` gives the same listings.

    Args:
        rows: number of listings (>= 1).
        seed: seed of the random generator.

    Returns:
        The listings (16 features + ``selling_price``) and their noise-free prices.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    rng = np.random.default_rng(seed)

    lines = [(brand, b.tier, m) for brand, b in CATALOG.items() for m in b.models]
    line_w = np.array([CATALOG[b].weight / len(CATALOG[b].models) for b, _, _ in lines])
    li = rng.choice(len(lines), size=rows, p=line_w / line_w.sum())
    brand = np.array([b for b, _, _ in lines], dtype=object)[li]
    tier = np.array([t for _, t, _ in lines], dtype=object)[li]
    model = np.array([m.name for _, _, m in lines], dtype=object)[li]
    body = np.array([m.body_type for _, _, m in lines], dtype=object)[li]
    price_new = np.array([m.price_new for _, _, m in lines])[li]
    base_cc = np.array([m.engine_cc for _, _, m in lines], dtype=float)[li]
    seats = np.array([m.seats for _, _, m in lines], dtype=float)[li]
    doors = np.array([m.doors for _, _, m in lines])[li]

    age = np.clip(np.round(rng.gamma(2.2, 2.6, rows)), 0, 25).astype(int)
    year = REFERENCE_YEAR - age

    # Fuel: diesel for big bodies and older cars, hybrids mostly recent.
    big = np.isin(body, ["SUV", "Estate", "MPV", "Pickup", "Sedan"]).astype(float)
    recent = (age <= 6).astype(float)
    p_fuel = np.column_stack(
        [
            np.full(rows, 0.55),
            0.20 + 0.25 * big + 0.01 * age,
            0.02 + 0.15 * recent,
            np.full(rows, 0.04),
        ]
    )
    p_fuel[body == "Pickup", 0] = 0.05
    fuel = _pick(rng, FUEL_TYPES, p_fuel)

    fuel_cc = np.where(fuel == "Diesel", 1.2, 1.0) * np.where(fuel == "Hybrid", 1.1, 1.0)
    engine_cc = np.clip(np.round(base_cc * fuel_cc * rng.lognormal(0, 0.15, rows), -1), 800, 6500)
    litre = engine_cc / 1000
    spec = np.vectorize(SPECIFIC_POWER.__getitem__)(fuel)
    tier_power = np.vectorize(TIER_POWER.__getitem__)(tier)
    power = np.round(litre * spec * tier_power * rng.lognormal(0, 0.08, rows), 1)
    torque = np.round(
        power * np.vectorize(TORQUE_PER_BHP.__getitem__)(fuel) * rng.lognormal(0, 0.05, rows), 1
    )
    mileage = (
        26.0
        - 3.4 * litre
        + np.where(fuel == "Diesel", 3.5, 0.0)
        + np.where(fuel == "Hybrid", 7.0, 0.0)
        + rng.normal(0, 1.2, rows)
    )
    mileage = np.round(np.clip(mileage, 4, 40), 1)

    annual_km = rng.lognormal(np.log(np.where(fuel == "Diesel", 19_000, 11_500)), 0.35)
    km = np.clip(np.round((age + rng.random(rows)) * annual_km, -2), 0, 900_000).astype(int)

    premium = np.isin(tier, ["premium", "luxury"]).astype(float)
    p_auto = np.clip(0.15 + 0.35 * premium + 0.025 * (20 - age), 0.05, 0.95)
    transmission = np.where(rng.random(rows) < p_auto, "Automatic", "Manual").astype(object)

    seller = _pick(rng, SELLER_TYPES, np.tile([0.45, 0.40, 0.15], (rows, 1)))
    p_owner = np.column_stack(
        [
            np.clip(0.95 - 0.06 * age, 0.15, None),
            np.clip(0.04 + 0.035 * age, 0, 0.45),
            np.clip(-0.02 + 0.018 * age, 0, 0.25),
            np.clip(-0.04 + 0.01 * age, 0, 0.15),
        ]
    )
    owner = _pick(rng, OWNER_TYPES, p_owner)
    color = _pick(
        rng, COLORS, np.tile([0.22, 0.2, 0.14, 0.16, 0.1, 0.08, 0.03, 0.03, 0.02, 0.02], (rows, 1))
    )

    typical_power = base_cc / 1000 * SPECIFIC_POWER["Petrol"] * tier_power
    lookup = np.vectorize
    log_price = (
        np.log(price_new)
        + 0.45 * np.log(power / typical_power)
        - lookup(DEPRECIATION.__getitem__)(tier) * age
        - 0.22 * np.log1p(km / 40_000)
        + lookup(FUEL_EFFECT.__getitem__)(fuel)
        + lookup(GEARBOX_EFFECT.__getitem__)(transmission)
        + lookup(OWNER_EFFECT.__getitem__)(owner)
        + lookup(SELLER_EFFECT.__getitem__)(seller)
        + lookup(COLOR_EFFECT.__getitem__)(color)
    )
    clean = np.exp(log_price)
    price = np.round(clean * np.exp(rng.normal(0, NOISE_SIGMA, rows)), 0)
    price = np.maximum(price, 100.0)

    df = pd.DataFrame(
        {
            "brand": brand,
            "model": model,
            "fuel_type": fuel,
            "transmission": transmission,
            "body_type": body,
            "seller_type": seller,
            "owner_type": owner,
            "color": color,
            "year": year,
            "km_driven": km,
            "engine_cc": engine_cc,
            "max_power_bhp": power,
            "mileage_kmpl": mileage,
            "seats": seats,
            "torque_nm": torque,
            "doors": doors,
            TARGET: price,
        }
    )
    for col, rate in MISSING_RATES.items():
        df.loc[rng.random(rows) < rate, col] = np.nan
    for col in ("engine_cc", "seats"):
        df[col] = df[col].astype("Int64")
    for col in CATEGORICAL:
        df[col] = df[col].astype(object)
    assert list(df.columns) == [*FEATURES, TARGET], "column order drifted from the contract"
    assert set(NUMERICAL) <= set(df.columns)
    return Sample(listings=df, clean_price=clean)


def write_csv(df: pd.DataFrame, out: Path, chunk: int = 100_000, progress: bool = False) -> None:
    """Write listings as CSV byte-for-byte reproducibly, atomically (temp file + rename).

    Written in chunks so that ``progress`` can show a bar on large files; the bytes do not
    depend on the chunk size.
    """
    from tqdm import tqdm

    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        bar = tqdm(total=len(df), unit="rows", disable=not progress, desc=f"writing {out}")
        for start in range(0, max(len(df), 1), chunk):
            part = df.iloc[start : start + chunk]
            part.to_csv(
                fh, index=False, header=start == 0, float_format="%.1f", lineterminator="\n"
            )
            bar.update(len(part))
        bar.close()


def write_sample(rows: int, seed: int, out: Path) -> None:
    """Generate ``rows`` listings with ``seed`` and write them to ``out`` (CSV, atomically)."""
    write_csv(generate(rows, seed).listings, out, progress=True)
