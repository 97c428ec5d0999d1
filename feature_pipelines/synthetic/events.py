"""SYNTHETIC behavioural events anchored on the real retail customers, items and invoice times.

The retail data records purchases only: no devices, sessions or anonymous visitors. Identity stitching and
person profiles need them, so this module invents them, deterministically from a seed, around the real
purchases. Nothing it writes is real; `feature_defs/data/README.md` says so too.

What the generated world holds (all counts drawn from `numpy.random.default_rng(seed)`):
- customers: the real ones (or, with `customers=N` beyond the real count, clones of them with their own
  ids and times shifted by up to two days, keeping a random share of the template's invoices but at least
  one per device, so stitching sees the same login coverage at 1M persons as on the real customers);
- devices: 1-3 per customer (desktop browsers have no device id; phone and tablet apps do), a cookie
  reset now and then (a second anonymous id on the same device), household tablets shared by two
  customers (one browser cookie for both), a few public kiosks that clear cookies after every session;
- sessions: one per real invoice (landing page, an optional search, a login, views and add-to-carts of the
  invoice's items, the purchase at the real invoice time) and browsing sessions at random times, some with
  a login; logged-in events carry the customer id;
- anonymous visitors who never log in, bots (one cookie, hundreds of views), and noise: placeholder device
  ids ("", "unknown", "0", the all-zero advertising id) and broken anonymous ids ("unknown", "") that any
  stitching must refuse to link on;
- `network_id`, an IP-like signal (a hashed network): a home network per customer (one for a household
  pair) or visitor, shared by the few ids of that home; office networks shared by a handful of customers;
  public networks (cafes, carriers, the kiosks' network) shared by many. A visitor whose cookie was reset
  on a desktop browser links to nothing deterministic: its home network is the evidence the scored edges
  of `identity/probabilistic.py` use, and a visitor living with a customer (a flatmate on the same
  network at the same times) lands in the review band.

Scale: `customers` sets the customers (and, through `World.visitors`, the never-login visitors); the
World's session means (`browse_sessions`, `visitor_sessions`) set the events per person, so 1M persons and
~10M events is `customers=500_000` with `World(visitors=1.0, browse_sessions=0.3, visitor_sessions=0.3)`
(`fstore generate-events --customers 500000 --visitors-per-customer 1 --sessions-per-customer 0.3
--sessions-per-visitor 0.3`).

Ground truth (`truth.parquet`: identifier_type, identifier, person) says who was behind each identifier:
one row per (identifier, person) that used it, so a shared device or kiosk is listed once per person.
Placeholder values are in no row: they identify no one.

Everything is vectorised (numpy draws, polars frames) so `customers=1_000_000` runs in bounded time.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from feature_defs.retail_rules import PRODUCT_CODE

ANCHOR = Path(__file__).resolve().parents[2] / "feature_defs" / "data" / "online_retail.parquet"
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "feature_defs" / "data" / "behaviour"
DEFAULT_SEED = 11
FILE_PREFIX = "events-"
TRUTH_FILE = "truth.parquet"

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "anonymous_id": pl.String(),
    "device_id": pl.String(),
    "customer_id": pl.Int64(),
    "event_type": pl.String(),
    "session_id": pl.String(),
    "stock_code": pl.String(),
    "invoice_no": pl.String(),
    "device_type": pl.String(),
    "locale": pl.String(),
    "referrer": pl.String(),
    "network_id": pl.String(),
}
TRUTH_SCHEMA: dict[str, pl.DataType] = {
    "identifier_type": pl.String(),
    "identifier": pl.String(),
    "person": pl.String(),
}
EVENT_TYPES = ("page_view", "search", "login", "product_view", "add_to_cart", "purchase")
PLACEHOLDER_DEVICE_IDS = ("", "unknown", "0", "00000000-0000-0000-0000-000000000000")
PLACEHOLDER_ANONYMOUS_IDS = ("unknown", "")
LOCALES = {
    "United Kingdom": "en-GB",
    "EIRE": "en-IE",
    "Germany": "de-DE",
    "France": "fr-FR",
    "Spain": "es-ES",
    "Belgium": "nl-BE",
    "Netherlands": "nl-NL",
    "Switzerland": "de-CH",
    "Portugal": "pt-PT",
    "Italy": "it-IT",
    "Norway": "nb-NO",
    "Australia": "en-AU",
    "USA": "en-US",
    "Japan": "ja-JP",
}
REFERRERS = ("direct", "search", "email", "social", "affiliate")
REFERRER_P = (0.35, 0.35, 0.15, 0.1, 0.05)
DEVICE_TYPES = ("desktop", "mobile", "tablet")
DEVICE_TYPE_P = (0.5, 0.4, 0.1)
_MASK63 = np.uint64((1 << 63) - 1)


@dataclass(frozen=True)
class World:
    """How the synthetic population behaves; the defaults make the shipped data set."""

    devices_p: tuple[float, float, float] = (0.5, 0.35, 0.15)  # 1, 2 or 3 personal devices
    cookie_reset: float = 0.1  # a device whose browser cookie is reset once (a second anonymous id)
    household: float = 0.04  # share of customer pairs sharing a household tablet (one cookie for both)
    household_use: float = 0.25  # share of a household member's sessions on the shared tablet
    kiosk_use: float = 0.01  # share of sessions on a public kiosk (fresh cookie per session)
    customers_per_kiosk: int = 2000
    browse_sessions: float = 1.5  # mean browsing sessions per customer, besides the purchases
    browse_login: float = 0.7  # a browsing session that logs in (wholesalers log in to see prices)
    clone_keep: float = 0.25  # share of a template's invoices a clone keeps (at least one)
    visitors: float = 0.5  # never-login visitors per customer
    visitor_sessions: float = 0.7  # mean extra sessions per visitor
    bots: float = 0.002  # bots per customer (at least one)
    placeholder_device: float = 0.005  # events whose device id is a placeholder
    placeholder_anonymous: float = 0.001  # logged-in events whose anonymous id is a placeholder
    home_network: float = 0.75  # share of a customer's own-device sessions on their home network
    office_network: float = 0.1  # ... on their office network (the rest: public networks)
    customers_per_office: int = 40
    customers_per_public_network: int = 20_000  # cafes, carriers: many ids behind each at any scale
    visitor_home: float = 0.85  # share of a visitor's sessions on their home network
    flatmates: float = 0.02  # visitors who live with a customer (the customer's home network)


@dataclass(frozen=True)
class Generated:
    events: pl.DataFrame  # EVENT_SCHEMA, sorted by event_time, event_id
    truth: pl.DataFrame  # TRUTH_SCHEMA, sorted

    @property
    def persons(self) -> int:
        return self.truth["person"].n_unique()


def _prefixed(prefix: str, index: np.ndarray, salt: int) -> pl.Series:
    """Unique, random-looking ids: an odd multiplier is a bijection modulo 2^63, so distinct indexes give
    distinct ids, and the same index and salt always give the same id."""
    mixed = (index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)) & _MASK63
    return pl.select(pl.lit(prefix) + pl.Series(mixed).cast(pl.String).str.zfill(19)).to_series()


@dataclass(frozen=True)
class Anchors:
    """What the synthetic world is anchored on: real customers, invoices (UTC) and products."""

    customers: pl.DataFrame  # customer_id, locale; sorted by customer_id
    invoices: pl.DataFrame  # customer_id, invoice_no, invoice_time, items (list, up to 3 stock codes)
    products: pl.DataFrame  # stock_code, description, weight (share of lines); sorted by stock_code
    start: datetime
    end: datetime


def load_anchors(path: Path = ANCHOR) -> Anchors:
    raw = pl.read_parquet(path)
    lines = (
        raw.filter(
            pl.col("CustomerID").is_not_null()
            & pl.col("InvoiceNo").str.contains(r"^\d")
            & (pl.col("Quantity") > 0)
            & (pl.col("UnitPrice") > 0)
            & pl.col("StockCode").str.contains(PRODUCT_CODE)
        )
        .with_columns(
            pl.col("StockCode").str.to_uppercase(),
            pl.col("InvoiceDate")
            .dt.replace_time_zone("Europe/London", ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
            .alias("invoice_time"),
        )
        .with_row_index("line")
    )
    invoices = (
        lines.sort("line")
        .group_by("InvoiceNo", maintain_order=True)
        .agg(
            pl.col("CustomerID").first().alias("customer_id"),
            pl.col("invoice_time").min(),
            pl.col("StockCode").unique(maintain_order=True).head(3).alias("items"),
        )
        .rename({"InvoiceNo": "invoice_no"})
        .drop_nulls("invoice_time")
        .sort("customer_id", "invoice_time", "invoice_no")
    )
    customers = (
        lines.sort("line")
        .group_by("CustomerID", maintain_order=True)
        .agg(pl.col("Country").first())
        .select(
            pl.col("CustomerID").alias("customer_id"),
            pl.col("Country").replace_strict(LOCALES, default="en-GB", return_dtype=pl.String).alias("locale"),
        )
        .sort("customer_id")
    )
    products = (
        lines.group_by("StockCode")
        .agg(pl.col("Description").drop_nulls().first().alias("description"), pl.len().alias("lines"))
        .sort("StockCode")
        .select(
            pl.col("StockCode").alias("stock_code"),
            "description",
            (pl.col("lines") / pl.col("lines").sum()).alias("weight"),
        )
    )
    times = raw["InvoiceDate"]
    return Anchors(
        customers,
        invoices,
        products,
        start=times.min().replace(hour=0, minute=0, tzinfo=UTC),
        end=times.max().replace(hour=23, minute=59, tzinfo=UTC),
    )


CHUNK = 100_000
"""Customers generated together; each chunk has its own random stream and id ranges, so memory stays bounded
at any scale and a chunk's output does not depend on how many chunks follow it."""


def generate(customers: int | None = None, seed: int = DEFAULT_SEED, world: World = World()) -> Generated:
    """The events and their ground truth for `customers` customers (default: the real ones), in memory."""
    parts = list(_chunks(customers, seed, world))
    events = pl.concat([e for e, _ in parts]).sort("event_time", "event_id")
    truth = pl.concat([t for _, t in parts]).unique().sort("identifier_type", "identifier", "person")
    return Generated(events, truth)


def _chunks(customers: int | None, seed: int, world: World):
    anchors = load_anchors()
    total = anchors.customers.height if customers is None else customers
    if total < 1:
        raise ValueError(f"--customers must be at least 1, got {total}")
    for chunk, base in enumerate(range(0, total, CHUNK)):
        yield _chunk(anchors, chunk, base, min(CHUNK, total - base), total, seed, world)


def _chunk(
    anchors: Anchors, chunk: int, base: int, count: int, total: int, seed: int, world: World
) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng([seed, chunk])
    people = _customers(anchors, base, count, rng)
    kiosks = max(2, total // world.customers_per_kiosk)
    publics = _publics(total, world)
    sessions = pl.concat(
        [
            _customer_sessions(anchors, people, rng, world, chunk, kiosks, publics),
            _visitor_sessions(anchors, people, rng, world, chunk, kiosks, publics),
            _bot_sessions(anchors, people, rng, world),
        ],
        how="vertical",
    )
    sessions = sessions.with_row_index("session").with_columns(
        (f"s-{chunk:03d}-" + pl.col("session").cast(pl.String).str.zfill(9)).alias("session_id")
    )
    events = _events(sessions, anchors, rng)
    truth = _truth(events)
    events = _noise(events, rng, world)
    return events.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()]), truth


def _customers(anchors: Anchors, base: int, count: int, rng: np.random.Generator) -> pl.DataFrame:
    """person index, customer_id, template (real customer whose invoices it replays), locale, shift."""
    real = anchors.customers
    index = np.arange(base, base + count)
    template = index % real.height
    ids = real["customer_id"].to_numpy()
    clone = index >= real.height
    shift = np.where(clone, rng.integers(-2880, 2881, count), 0)  # minutes
    return pl.DataFrame(
        {
            "p": index,
            "customer_id": np.where(clone, 10_000_000 + index, ids[template]).astype(np.int64),
            "template": ids[template].astype(np.int64),
            "locale": real["locale"].to_numpy()[template],
            "clone": clone,
            "shift": shift.astype(np.int64),
        }
    )


def _publics(total: int, w: World) -> int:
    return max(1, total // w.customers_per_public_network)


def _pick(rng: np.random.Generator, choices: tuple[str, ...], p: tuple[float, ...], size: int) -> np.ndarray:
    return np.asarray(choices, dtype=object)[rng.choice(len(choices), size=size, p=p)]


def _customer_sessions(
    anchors: Anchors,
    people: pl.DataFrame,
    rng: np.random.Generator,
    w: World,
    chunk: int,
    kiosks: int,
    publics: int,
) -> pl.DataFrame:
    n = people.height
    first = int(people["p"][0])
    # Devices: 1-3 per customer, desktop browsers without a device id, some with a cookie reset.
    n_dev = rng.choice(3, size=n, p=w.devices_p) + 1
    owner = np.repeat(np.arange(n), n_dev)  # local person index
    dev_type = _pick(rng, DEVICE_TYPES, DEVICE_TYPE_P, owner.size)
    reset = rng.random(owner.size) < w.cookie_reset
    span = (anchors.end - anchors.start).total_seconds()
    reset_at = rng.random(owner.size) * span
    dev = np.arange(owner.size) - np.repeat(np.cumsum(n_dev) - n_dev, n_dev)
    device_index = 4 * (first + owner) + dev  # global: unique across chunks
    devices = pl.DataFrame(
        {
            "p": first + owner,
            "dev": dev,
            "device_type": dev_type,
            "device_id": _prefixed("dev-", device_index, 1).to_numpy(),
            "anon0": _prefixed("anon-", 2 * device_index, 2).to_numpy(),
            "anon1": _prefixed("anon-", 2 * device_index + 1, 2).to_numpy(),
            "reset": reset,
            "reset_at": reset_at,
        }
    ).with_columns(pl.when(pl.col("device_type") == "desktop").then(None).otherwise("device_id").alias("device_id"))

    # Purchase sessions: one per (kept) invoice of the template customer.
    purchases = people.join(
        anchors.invoices.rename({"customer_id": "template"}), on="template", how="inner", maintain_order="left"
    ).sort("p", "invoice_time", "invoice_no")
    u = rng.random(purchases.height)
    # A clone keeps a share of its template's invoices, but at least one per device (or all it has): the
    # purchases go round the devices, so every device sees a login at any scale, as with the real customers.
    purchases = (
        purchases.with_columns(pl.Series("u", u))
        .join(pl.DataFrame({"p": first + np.arange(n), "n_dev": n_dev}), on="p", maintain_order="left")
        .filter(
            ~pl.col("clone") | (pl.col("u") < w.clone_keep) | (pl.col("u").rank("ordinal").over("p") <= pl.col("n_dev"))
        )
        .drop("n_dev")
        .with_columns(
            (pl.col("invoice_time") + pl.duration(minutes=pl.col("shift")))
            .clip(anchors.start + timedelta(hours=1), anchors.end)
            .alias("end"),
            pl.lit("purchase").alias("kind"),
        )
        .drop("u", "invoice_time")
    )
    # Browsing sessions at random times.
    n_browse = rng.poisson(w.browse_sessions, n)
    browse = people.select(pl.all().gather(np.repeat(np.arange(n), n_browse))).with_columns(
        pl.Series("end", _uniform_times(anchors, rng, int(n_browse.sum()))),
        pl.lit(None, pl.String).alias("invoice_no"),
        pl.lit(None, pl.List(pl.String)).alias("items"),
        pl.lit("browse").alias("kind"),
    )
    s = pl.concat([purchases.select(browse.columns), browse], how="vertical").sort("p", "end", "kind", "invoice_no")
    m = s.height
    # Which device: purchases go round the customer's devices (so each device sees a login), browsing is
    # random; a few sessions on a kiosk, household members sometimes on the shared tablet.
    s = s.join(pl.DataFrame({"p": first + np.arange(n), "n_dev": n_dev}), on="p", maintain_order="left")
    rank = s.select(pl.int_range(pl.len()).over("p", "kind")).to_series().to_numpy()  # k-th purchase: device k
    dev = np.where(s["kind"].to_numpy() == "purchase", rank, rng.integers(0, 3, m)) % s["n_dev"].to_numpy()
    s = s.with_columns(pl.Series("dev", dev)).join(devices, on=["p", "dev"], how="left", maintain_order="left")
    offset = (s["end"].dt.epoch("us").to_numpy() - int(anchors.start.timestamp() * 1e6)) / 1e6
    anon = np.where(s["reset"].to_numpy() & (offset > s["reset_at"].to_numpy()), s["anon1"], s["anon0"])
    s = s.with_columns(pl.Series("anonymous_id", anon, pl.String))

    # Households: customers 2k and 2k+1 (CHUNK is even, so pairs never straddle chunks).
    household_pair = rng.random(n // 2 + 1) < w.household
    local = np.arange(n)
    in_household = household_pair[local // 2] & ((local ^ 1) < n)
    p = s["p"].to_numpy()
    pair = p // 2
    on_tablet = in_household[p - first] & (rng.random(m) < w.household_use)
    on_kiosk = rng.random(m) < w.kiosk_use
    kiosk = rng.integers(0, kiosks, m)
    session_index = (chunk << 32) + np.arange(m)
    s = s.with_columns(
        pl.when(pl.Series(on_kiosk))
        .then(_prefixed("kiosk-anon-", session_index, 3))
        .when(pl.Series(on_tablet))
        .then(_prefixed("anon-h", pair, 4))
        .otherwise("anonymous_id")
        .alias("anonymous_id"),
        pl.when(pl.Series(on_kiosk))
        .then(_prefixed("dev-k", kiosk, 5))
        .when(pl.Series(on_tablet))
        .then(_prefixed("dev-h", pair, 6))
        .otherwise("device_id")
        .alias("device_id"),
        pl.when(pl.Series(on_kiosk))
        .then(pl.lit("desktop"))
        .when(pl.Series(on_tablet))
        .then(pl.lit("tablet"))
        .otherwise("device_type")
        .alias("device_type"),
    )
    # Networks: home (a household pair shares one), office, public; a kiosk is on a public network.
    where = rng.random(m)
    home = np.where(in_household[p - first], p - p % 2, p)
    s = s.with_columns(
        pl.when(pl.Series(on_kiosk))
        .then(_prefixed("net-k", kiosk, 11))
        .when(pl.Series(where < w.home_network))
        .then(_prefixed("net-h", home, 12))
        .when(pl.Series(where < w.home_network + w.office_network))
        .then(_prefixed("net-o", p // w.customers_per_office, 13))
        .otherwise(_prefixed("net-p", rng.integers(0, publics, m), 14))
        .alias("network_id")
    )
    login = (s["kind"].to_numpy() == "purchase") | (rng.random(m) < w.browse_login)
    return _finish(s, rng, person=("c-" + pl.col("customer_id").cast(pl.String)), login=login)


def _visitor_sessions(
    anchors: Anchors,
    people: pl.DataFrame,
    rng: np.random.Generator,
    w: World,
    chunk: int,
    kiosks: int,
    publics: int,
) -> pl.DataFrame:
    first = int(people["p"][0])
    v_first = int(round(first * w.visitors))
    v = int(round((first + people.height) * w.visitors)) - v_first
    n_sessions = 1 + rng.poisson(w.visitor_sessions, v)
    owner = np.repeat(np.arange(v), n_sessions)
    m = owner.size
    dev_type = _pick(rng, DEVICE_TYPES, DEVICE_TYPE_P, v)
    reset = rng.random(v) < w.cookie_reset
    end = _uniform_times(anchors, rng, m)
    locales = people["locale"].to_numpy()[rng.integers(0, people.height, v)] if v else np.zeros(0, object)
    on_kiosk = rng.random(m) < w.kiosk_use
    # A visitor's home network: their own, or (a flatmate) a customer's of the chunk.
    flatmate = rng.random(v) < w.flatmates
    home = np.where(
        flatmate,
        people["p"].to_numpy()[rng.integers(0, people.height, v)] if v else np.zeros(0, np.int64),
        (1 << 40) + v_first + np.arange(v),
    )
    at_home = rng.random(m) < w.visitor_home
    public = rng.integers(0, publics, m)
    kiosk_net = rng.integers(0, kiosks, m)
    s = pl.DataFrame({"p": owner, "end": end}).sort("p", "end")
    rank = s.select(pl.int_range(pl.len()).over("p")).to_series().to_numpy()
    slot = np.where(reset[owner] & (rank >= 1), 1, 0)  # the cookie resets after the first session
    anon = _prefixed("anon-v", 2 * (v_first + owner) + slot, 7)
    device = _prefixed("dev-v", v_first + owner, 8)
    s = s.with_columns(
        pl.when(pl.Series(on_kiosk))
        .then(_prefixed("kiosk-anon-v", (chunk << 32) + np.arange(m), 9))
        .otherwise(anon)
        .alias("anonymous_id"),
        pl.when(pl.Series(on_kiosk))
        .then(_prefixed("dev-k", rng.integers(0, kiosks, m), 5))
        .when(pl.Series(dev_type[owner] == "desktop"))
        .then(None)
        .otherwise(device)
        .alias("device_id"),
        pl.when(pl.Series(on_kiosk)).then(pl.lit("desktop")).otherwise(pl.Series(dev_type[owner])).alias("device_type"),
        pl.when(pl.Series(on_kiosk))
        .then(_prefixed("net-k", kiosk_net, 11))
        .when(pl.Series(at_home))
        .then(_prefixed("net-h", home[s["p"].to_numpy()] if m else np.zeros(0, np.int64), 12))
        .otherwise(_prefixed("net-p", public, 14))
        .alias("network_id"),
        pl.Series("locale", locales[owner] if m else np.zeros(0, object), pl.String),
        pl.lit(None, pl.Int64).alias("customer_id"),
        pl.lit(None, pl.String).alias("invoice_no"),
        pl.lit(None, pl.List(pl.String)).alias("items"),
        pl.lit("browse").alias("kind"),
    )
    person = "v-" + (pl.col("p") + v_first).cast(pl.String)
    return _finish(s, rng, person=person, login=np.zeros(m, bool))


def _bot_sessions(anchors: Anchors, people: pl.DataFrame, rng: np.random.Generator, w: World) -> pl.DataFrame:
    first = int(people["p"][0])
    b = max(1, int(round((first + people.height) * w.bots)) - int(round(first * w.bots)))
    s = pl.DataFrame(
        {
            "p": first + np.arange(b),  # b <= the chunk's customers: unique across chunks
            "end": _uniform_times(anchors, rng, b),
            "anonymous_id": _prefixed("anon-b", first + np.arange(b), 10).to_numpy(),
            "network_id": _prefixed("net-p", (1 << 48) + first + np.arange(b), 14).to_numpy(),  # a data centre
        }
    ).with_columns(
        pl.lit(None, pl.String).alias("device_id"),
        pl.lit("desktop").alias("device_type"),
        pl.lit("en-US").alias("locale"),
        pl.lit(None, pl.Int64).alias("customer_id"),
        pl.lit(None, pl.String).alias("invoice_no"),
        pl.lit(None, pl.List(pl.String)).alias("items"),
        pl.lit("bot").alias("kind"),
    )
    return _finish(s, rng, person=("b-" + pl.col("p").cast(pl.String)), login=np.zeros(b, bool))


def _uniform_times(anchors: Anchors, rng: np.random.Generator, size: int) -> pl.Series:
    start = int(anchors.start.timestamp() * 1e6) + 3_600_000_000
    end = int(anchors.end.timestamp() * 1e6)
    micros = rng.integers(start, end, size) // 60_000_000 * 60_000_000  # whole minutes, like the invoices
    return pl.Series("end", micros).cast(pl.Datetime("us", "UTC"))


SESSION_COLUMNS = (
    "person",
    "anonymous_id",
    "device_id",
    "device_type",
    "locale",
    "customer_id",
    "invoice_no",
    "items",
    "kind",
    "end",
    "login",
    "n_search",
    "n_view",
    "n_cart",
    "n_purchase",
    "minutes",
    "referrer",
    "network_id",
)


def _finish(s: pl.DataFrame, rng: np.random.Generator, *, person: pl.Expr, login: np.ndarray) -> pl.DataFrame:
    """Per session: who, the event counts of each type, its length and its referrer."""
    m = s.height
    kind = s["kind"].to_numpy()
    n_items = s.select(pl.col("items").list.len().fill_null(0)).to_series().to_numpy()
    purchase = kind == "purchase"
    bot = kind == "bot"
    browse_views = rng.integers(1, 5, m)
    n_view = np.where(purchase, n_items, np.where(bot, rng.integers(50, 300, m), browse_views))
    n_cart = np.where(purchase, n_items, np.where(bot, 0, (rng.random(m) < 0.3).astype(np.int64)))
    return s.with_columns(
        person.alias("person"),
        pl.Series("login", login.astype(np.int64)),
        pl.Series("n_search", np.where(bot, 0, (rng.random(m) < 0.4).astype(np.int64))),
        pl.Series("n_view", n_view.astype(np.int64)),
        pl.Series("n_cart", n_cart.astype(np.int64)),
        pl.Series("n_purchase", purchase.astype(np.int64)),
        pl.Series("minutes", np.where(bot, 0, rng.integers(3, 46, m)).astype(np.int64)),
        pl.Series("referrer", np.where(bot, "direct", _pick(rng, REFERRERS, REFERRER_P, m)), pl.String),
    ).select(SESSION_COLUMNS)


def _events(sessions: pl.DataFrame, anchors: Anchors, rng: np.random.Generator) -> pl.DataFrame:
    """Each session's events in order: landing page, search, login, product views, add-to-carts, purchase."""
    b1 = 1 + pl.col("n_search")
    b2 = b1 + pl.col("login")
    b3 = b2 + pl.col("n_view")
    b4 = b3 + pl.col("n_cart")
    n = b4 + pl.col("n_purchase")
    slots = (
        sessions.with_columns(n.alias("n"), b1.alias("b1"), b2.alias("b2"), b3.alias("b3"), b4.alias("b4"))
        .drop("session", "kind", "n_search", "n_view", "n_cart", "n_purchase")
        .with_columns(pl.int_ranges(0, pl.col("n")).alias("i"))
        .explode("i")
        .with_columns(pl.col("i").cast(pl.Int64))
    )
    i = pl.col("i")
    b1, b2, b3, b4 = pl.col("b1"), pl.col("b2"), pl.col("b3"), pl.col("b4")
    slots = slots.with_columns(
        pl.when(i < 1)
        .then(pl.lit("page_view"))
        .when(i < b1)
        .then(pl.lit("search"))
        .when(i < b2)
        .then(pl.lit("login"))
        .when(i < b3)
        .then(pl.lit("product_view"))
        .when(i < b4)
        .then(pl.lit("add_to_cart"))
        .otherwise(pl.lit("purchase"))
        .alias("event_type"),
        pl.when((i >= b2) & (i < b3))
        .then(i - b2)
        .when((i >= b3) & (i < b4))
        .then(i - b3)
        .when(i >= b4)
        .then(0)
        .otherwise(None)
        .alias("j"),
    )
    # The item of the j-th view: the invoice's j-th item, else a product drawn by its share of real lines.
    drawn = rng.choice(anchors.products.height, size=slots.height, p=anchors.products["weight"].to_numpy())
    slots = slots.with_columns(
        pl.when(pl.col("j").is_not_null())
        .then(
            pl.coalesce(
                pl.col("items").list.get(pl.col("j"), null_on_oob=True),
                pl.Series(anchors.products["stock_code"].to_numpy()[drawn]),
            )
        )
        .alias("stock_code")
    )
    # Cart j and view j must be the same item: take the view's item for the cart.
    view_item = (
        slots.filter(pl.col("event_type") == "product_view")
        .select("session_id", "j", pl.col("stock_code").alias("viewed"))
        .unique(["session_id", "j"], keep="first", maintain_order=True)
    )
    slots = slots.join(view_item, on=["session_id", "j"], how="left", maintain_order="left").with_columns(
        pl.when(pl.col("event_type").is_in(["add_to_cart", "purchase"]))
        .then("viewed")
        .otherwise("stock_code")
        .alias("stock_code")
    )
    length = pl.duration(minutes=pl.col("minutes")) + pl.duration(seconds=2 * pl.col("n"))
    step = pl.when(pl.col("n") > 1).then(length / (pl.col("n") - 1)).otherwise(pl.duration(seconds=0))
    return slots.with_columns(
        pl.when(i == pl.col("n") - 1)  # the last event (the purchase) at the real invoice time
        .then(pl.col("end"))
        .otherwise((pl.col("end") - length + step * i).dt.truncate("1s"))
        .alias("event_time"),
        (pl.col("session_id") + "-" + pl.col("i").cast(pl.String).str.zfill(4)).alias("event_id"),
        pl.when(pl.col("login") == 1).then(pl.when(i >= b1).then("customer_id")).alias("customer_id"),
        pl.when(pl.col("event_type") == "purchase").then("invoice_no").alias("invoice_no"),
    )


def _truth(events: pl.DataFrame) -> pl.DataFrame:
    """Who was behind each identifier, before the noise hides some of them."""
    parts = [
        events.select(pl.lit(kind).alias("identifier_type"), pl.col(kind).cast(pl.String).alias("identifier"), "person")
        for kind in ("anonymous_id", "device_id", "customer_id")
    ]
    return pl.concat(parts).drop_nulls().unique().sort("identifier_type", "identifier", "person")


def _noise(events: pl.DataFrame, rng: np.random.Generator, w: World) -> pl.DataFrame:
    """Placeholder ids in a few events: trackers that send "unknown", "0" or the all-zero advertising id."""
    m = events.height
    dev_noise = rng.random(m) < w.placeholder_device
    anon_noise = rng.random(m) < w.placeholder_anonymous
    device_value = np.asarray(PLACEHOLDER_DEVICE_IDS, dtype=object)[rng.integers(0, len(PLACEHOLDER_DEVICE_IDS), m)]
    anon_value = np.asarray(PLACEHOLDER_ANONYMOUS_IDS, dtype=object)[rng.integers(0, len(PLACEHOLDER_ANONYMOUS_IDS), m)]
    return events.with_columns(
        pl.when(pl.Series(dev_noise))
        .then(pl.Series(device_value, dtype=pl.String))
        .otherwise("device_id")
        .alias("device_id"),
        pl.when(pl.Series(anon_noise) & pl.col("customer_id").is_not_null())
        .then(pl.Series(anon_value, dtype=pl.String))
        .otherwise("anonymous_id")
        .alias("anonymous_id"),
    )


def write(
    out: Path = DEFAULT_OUT, customers: int | None = None, seed: int = DEFAULT_SEED, world: World = World()
) -> list[Path]:
    """Generate and write one Parquet file per UTC day (`events-YYYY-MM-DD.parquet`, sorted by event_time,
    event_id) and `truth.parquet`. Chunks go to per-day part files first, then each day is merged alone, so
    memory is bounded by a chunk and a day, not the whole run. Earlier files of the folder are replaced: a
    smaller run leaves no stale day behind."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob(f"{FILE_PREFIX}*.parquet"), out / TRUTH_FILE]:
        old.unlink(missing_ok=True)
    parts = out / ".parts"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir()
    truths = []
    for k, (events, truth) in enumerate(_chunks(customers, seed, world)):
        truths.append(truth)
        days = events.with_columns(pl.col("event_time").dt.date().cast(pl.String).alias("_day"))
        for (day,), frame in days.partition_by("_day", as_dict=True, maintain_order=True).items():
            frame.drop("_day").write_parquet(parts / f"{day}.{k:05d}.parquet")
        del events, days
    by_day: dict[str, list[Path]] = {}
    for part in sorted(parts.glob("*.parquet")):
        by_day.setdefault(part.name.split(".")[0], []).append(part)
    written = []
    for day, files in sorted(by_day.items()):
        path = out / f"{FILE_PREFIX}{day}.parquet"
        pl.read_parquet(files).sort("event_time", "event_id").write_parquet(path, statistics=True)
        written.append(path)
    shutil.rmtree(parts)
    pl.concat(truths).unique().sort("identifier_type", "identifier", "person").write_parquet(out / TRUTH_FILE)
    return written


def read_events(out: Path = DEFAULT_OUT) -> pl.DataFrame:
    files = sorted(out.glob(f"{FILE_PREFIX}*.parquet"))
    if not files:
        raise FileNotFoundError(f"no behaviour events in {out} ({FILE_PREFIX}*.parquet); run `fstore generate-events`")
    return pl.read_parquet(files).sort("event_time", "event_id")


def ensure(out: Path = DEFAULT_OUT, customers: int | None = None, seed: int = DEFAULT_SEED) -> bool:
    """Generate the events when the folder has none (the demo's first run) or holds files of an older
    generator (a column of `EVENT_SCHEMA` missing); True when it generated."""
    files = sorted(out.glob(f"{FILE_PREFIX}*.parquet"))
    if files and (out / TRUTH_FILE).exists() and set(EVENT_SCHEMA) <= set(pl.read_parquet_schema(files[0])):
        return False
    write(out, customers, seed)
    return True
