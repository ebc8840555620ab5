"""The car catalogue: brands, their models and the category vocabularies.

The synthetic data generator draws from it and the data contract takes its allowed categories
from it, so the two cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CarModel:
    """One model line: its body, list price when new and typical engine."""

    name: str
    body_type: str
    price_new: float  # EUR, base trim, petrol
    engine_cc: int  # typical petrol engine
    seats: int
    doors: int


@dataclass(frozen=True)
class Brand:
    """A brand: its market tier and model lines."""

    tier: str  # budget | mainstream | premium | luxury
    weight: float  # share of listings
    models: tuple[CarModel, ...]


def _m(name: str, body: str, price: float, cc: int, seats: int = 5, doors: int = 5) -> CarModel:
    return CarModel(name, body, price, cc, seats, doors)


CATALOG: dict[str, Brand] = {
    "Dacia": Brand(
        "budget",
        0.05,
        (
            _m("Sandero", "Hatchback", 13_500, 1000),
            _m("Duster", "SUV", 19_000, 1300),
            _m("Jogger", "MPV", 18_500, 1000, seats=7),
        ),
    ),
    "Fiat": Brand(
        "budget",
        0.05,
        (
            _m("500", "Hatchback", 17_000, 1000, seats=4, doors=3),
            _m("Panda", "Hatchback", 14_500, 1000),
            _m("Tipo", "Sedan", 20_000, 1400, doors=4),
        ),
    ),
    "Skoda": Brand(
        "mainstream",
        0.08,
        (
            _m("Fabia", "Hatchback", 18_000, 1000),
            _m("Octavia", "Estate", 29_000, 1500),
            _m("Kodiaq", "SUV", 40_000, 1500, seats=7),
            _m("Superb", "Sedan", 42_000, 2000, doors=4),
        ),
    ),
    "Hyundai": Brand(
        "mainstream",
        0.07,
        (
            _m("i10", "Hatchback", 14_000, 1000),
            _m("i30", "Hatchback", 24_000, 1500),
            _m("Tucson", "SUV", 36_000, 1600),
        ),
    ),
    "Kia": Brand(
        "mainstream",
        0.06,
        (
            _m("Picanto", "Hatchback", 13_500, 1000),
            _m("Ceed", "Estate", 25_000, 1500),
            _m("Sportage", "SUV", 35_000, 1600),
        ),
    ),
    "Volkswagen": Brand(
        "mainstream",
        0.14,
        (
            _m("Polo", "Hatchback", 20_000, 1000),
            _m("Golf", "Hatchback", 30_000, 1500),
            _m("Passat", "Estate", 42_000, 2000),
            _m("Tiguan", "SUV", 40_000, 1500),
            _m("Touran", "MPV", 36_000, 1500, seats=7),
        ),
    ),
    "Ford": Brand(
        "mainstream",
        0.09,
        (
            _m("Fiesta", "Hatchback", 18_000, 1000),
            _m("Focus", "Hatchback", 26_000, 1500),
            _m("Kuga", "SUV", 36_000, 1500),
            _m("Mustang", "Coupe", 55_000, 5000, seats=4, doors=2),
            _m("Ranger", "Pickup", 42_000, 2000, doors=4),
        ),
    ),
    "Toyota": Brand(
        "mainstream",
        0.09,
        (
            _m("Yaris", "Hatchback", 20_000, 1500),
            _m("Corolla", "Sedan", 29_000, 1800, doors=4),
            _m("RAV4", "SUV", 42_000, 2500),
            _m("Hilux", "Pickup", 40_000, 2400, doors=4),
        ),
    ),
    "Renault": Brand(
        "mainstream",
        0.07,
        (
            _m("Clio", "Hatchback", 18_500, 1000),
            _m("Megane", "Estate", 27_000, 1300),
            _m("Captur", "SUV", 25_000, 1300),
        ),
    ),
    "Peugeot": Brand(
        "mainstream",
        0.06,
        (
            _m("208", "Hatchback", 20_000, 1200),
            _m("308", "Hatchback", 28_000, 1200),
            _m("3008", "SUV", 36_000, 1200),
        ),
    ),
    "BMW": Brand(
        "premium",
        0.07,
        (
            _m("1 Series", "Hatchback", 34_000, 1500),
            _m("3 Series", "Sedan", 46_000, 2000, doors=4),
            _m("5 Series", "Sedan", 60_000, 2000, doors=4),
            _m("X3", "SUV", 55_000, 2000),
            _m("Z4", "Convertible", 52_000, 2000, seats=2, doors=2),
        ),
    ),
    "Mercedes-Benz": Brand(
        "premium",
        0.07,
        (
            _m("A-Class", "Hatchback", 35_000, 1300),
            _m("C-Class", "Sedan", 50_000, 2000, doors=4),
            _m("E-Class", "Sedan", 62_000, 2000, doors=4),
            _m("GLC", "SUV", 58_000, 2000),
        ),
    ),
    "Audi": Brand(
        "premium",
        0.06,
        (
            _m("A3", "Hatchback", 34_000, 1500),
            _m("A4", "Estate", 46_000, 2000),
            _m("A6", "Sedan", 60_000, 2000, doors=4),
            _m("Q5", "SUV", 58_000, 2000),
        ),
    ),
    "Volvo": Brand(
        "premium",
        0.03,
        (
            _m("XC40", "SUV", 42_000, 1500),
            _m("V60", "Estate", 48_000, 2000),
            _m("XC90", "SUV", 75_000, 2000, seats=7),
        ),
    ),
    "Porsche": Brand(
        "luxury",
        0.01,
        (
            _m("911", "Coupe", 125_000, 3000, seats=4, doors=2),
            _m("Cayenne", "SUV", 95_000, 3000),
            _m("Macan", "SUV", 70_000, 2000),
        ),
    ),
}

FUEL_TYPES = ("Petrol", "Diesel", "Hybrid", "LPG")
TRANSMISSIONS = ("Manual", "Automatic")
BODY_TYPES = ("Hatchback", "Sedan", "SUV", "Estate", "Coupe", "MPV", "Convertible", "Pickup")
SELLER_TYPES = ("Dealer", "Private", "Trustmark Dealer")
OWNER_TYPES = ("First", "Second", "Third", "Fourth & Above")
COLORS = ("White", "Black", "Silver", "Grey", "Blue", "Red", "Green", "Brown", "Yellow", "Orange")
