"""A labelled extraction set generated from templates: a sentence, the JSON schema to extract into, and the answer.

Five record kinds (person, order, meeting, ticket, invoice), several phrasings each, values drawn from fixed
lists with a seeded generator. Each schema's string fields carry a maxLength, so an answer under the grammar ends
within a known number of tokens. Used by tests/integration/slm/test_slm_structured.py (validity over >= 100
prompts) and bench/slm/bench_real_model.py (validity and field-level accuracy, with and without the grammar).

Written separately from the server's schema handling (tiered_slm/structured.py) and sharing nothing with it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

FIRST = ["Maria", "Tom", "Aiko", "Lars", "Fatima", "Diego", "Chen", "Olga", "Kwame", "Nina", "Ravi", "Emma",
         "Jonas", "Sara", "Mateo", "Lena", "Omar", "Ines", "Pavel", "Grace"]
LAST = ["Lopez", "Becker", "Tanaka", "Nilsson", "Haddad", "Rossi", "Wang", "Petrova", "Mensah", "Kowalski",
        "Sharma", "Dubois", "Weber", "Costa", "Garcia", "Novak", "Farouk", "Silva", "Horvat", "Kim"]
CITIES = ["Valencia", "Hamburg", "Osaka", "Uppsala", "Beirut", "Turin", "Chengdu", "Kazan", "Accra", "Krakow",
          "Pune", "Lyon", "Leipzig", "Porto", "Seville", "Brno", "Cairo", "Recife", "Zagreb", "Busan"]
PRODUCTS = ["desk lamp", "coffee grinder", "yoga mat", "water bottle", "backpack", "keyboard", "monitor stand",
            "kettle", "headphones", "notebook"]
ROOMS = ["Orion", "Lyra", "Vega", "Atlas", "Nova", "Delta"]
ISSUES = ["cannot log in after the update", "was charged twice for one order", "the app crashes on start",
          "the parcel never arrived", "wants to change the delivery address", "the invoice shows the wrong name"]
CURRENCIES = {"EUR": "euros", "USD": "dollars", "GBP": "pounds"}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


@dataclass(frozen=True)
class ExtractionItem:
    kind: str
    text: str
    schema: dict[str, Any]
    expected: dict[str, Any]

    def messages(self) -> list[dict[str, str]]:
        fields = ", ".join(self.schema["properties"])
        return [{"role": "system", "content": f"Extract the {self.kind} from the text as JSON with the fields "
                                               f"{fields}. Answer with JSON only."},
                {"role": "user", "content": self.text}]

    def response_format(self) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": self.kind, "strict": True, "schema": self.schema}}


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _text(limit: int = 40) -> dict[str, Any]:
    return {"type": "string", "maxLength": limit}


SCHEMAS: dict[str, dict[str, Any]] = {
    "person": _obj({"name": _text(), "age": {"type": "integer"}, "city": _text()}),
    "order": _obj({"order_id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"}, "product": _text(),
                   "quantity": {"type": "integer"}, "express": {"type": "boolean"}}),
    "meeting": _obj({"date": {"type": "string", "format": "date"}, "room": {"enum": ROOMS},
                     "attendees": {"type": "array", "items": _text(24), "maxItems": 4}}),
    "ticket": _obj({"customer": _text(), "priority": {"enum": ["low", "medium", "high"]},
                    "issue": _text(60)}),
    "invoice": _obj({"amount": {"type": "number"}, "currency": {"enum": list(CURRENCIES)},
                     "paid": {"type": "boolean"}}),
}


def _person(rng: random.Random) -> tuple[str, dict[str, Any]]:
    name, age, city = f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.randint(18, 90), rng.choice(CITIES)
    text = rng.choice([
        f"{name}, {age}, lives in {city}.",
        f"Hi, I'm {name} ({age} years old) from {city}.",
        f"Our new member is {name}; she or he is {age} and moved to {city} last year.",
        f"Name: {name}. Age: {age}. Home town: {city}.",
    ])
    return text, {"name": name, "age": age, "city": city}


def _order(rng: random.Random) -> tuple[str, dict[str, Any]]:
    order_id = f"{rng.choice('ABCDEFGHKLMNPRST')}{rng.choice('ABCDEFGHKLMNPRST')}-{rng.randint(1000, 9999)}"
    product, quantity, express = rng.choice(PRODUCTS), rng.randint(1, 12), rng.random() < 0.5
    shipping = "express shipping" if express else "standard shipping"
    text = rng.choice([
        f"Order {order_id}: {quantity} x {product}, {shipping}.",
        f"Please send {quantity} {product} (order {order_id}) with {shipping}.",
        f"Customer placed order {order_id} for {quantity} units of the {product}; {shipping} was chosen.",
    ])
    return text, {"order_id": order_id, "product": product, "quantity": quantity, "express": express}


def _meeting(rng: random.Random) -> tuple[str, dict[str, Any]]:
    month, day, year = rng.randint(1, 12), rng.randint(1, 28), rng.choice([2025, 2026, 2027])
    people = rng.sample(FIRST, rng.randint(2, 4))
    room = rng.choice(ROOMS)
    date_words = rng.choice([f"{MONTHS[month - 1]} {day}, {year}", f"{year}-{month:02d}-{day:02d}"])
    text = rng.choice([
        f"Meeting on {date_words} in room {room} with {', '.join(people)}.",
        f"{' and '.join(people)} will meet in {room} on {date_words}.",
    ])
    return text, {"date": f"{year}-{month:02d}-{day:02d}", "room": room, "attendees": people}


def _ticket(rng: random.Random) -> tuple[str, dict[str, Any]]:
    customer = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    priority, issue = rng.choice(["low", "medium", "high"]), rng.choice(ISSUES)
    text = rng.choice([
        f"Ticket from {customer} ({priority} priority): the customer {issue}.",
        f"{customer} reports that the customer {issue}. Priority: {priority}.",
    ])
    return text, {"customer": customer, "priority": priority, "issue": issue}


def _invoice(rng: random.Random) -> tuple[str, dict[str, Any]]:
    amount = round(rng.uniform(5, 2000), 2)
    currency = rng.choice(list(CURRENCIES))
    paid = rng.random() < 0.5
    state = "has been paid" if paid else "is still open"
    text = rng.choice([
        f"Invoice total: {amount} {currency}; it {state}.",
        f"The invoice for {amount} {CURRENCIES[currency]} {state}.",
    ])
    return text, {"amount": amount, "currency": currency, "paid": paid}


MAKERS = {"person": _person, "order": _order, "meeting": _meeting, "ticket": _ticket, "invoice": _invoice}


def extraction_items(n: int, seed: int = 18) -> list[ExtractionItem]:
    """`n` items, the kinds in rotation, values from a generator seeded with `seed`."""
    rng = random.Random(seed)
    kinds = list(MAKERS)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        text, expected = MAKERS[kind](rng)
        out.append(ExtractionItem(kind, text, SCHEMAS[kind], expected))
    return out


def field_matches(expected: Any, got: Any) -> bool:
    """A field is right when it equals the label (strings compared case- and space-insensitively, numbers within
    a cent, lists as sets)."""
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected is got
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        return abs(float(expected) - float(got)) < 0.005
    if isinstance(expected, str) and isinstance(got, str):
        return " ".join(expected.lower().split()) == " ".join(got.lower().split())
    if isinstance(expected, list) and isinstance(got, list):
        return {str(x).lower() for x in expected} == {str(x).lower() for x in got}
    return False
