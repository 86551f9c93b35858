"""The catalog's `destinations:` (SPEC 9) and `imports:` (SPEC 10) sections."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.catalog import Catalog, load_catalog
from pipeline.errors import CatalogError
from pipeline.runtime.topics import Names, pipeline_topics

HERE = Path(__file__).parent
SCHEMAS = HERE.parents[1] / "schemas"
FIXTURES = HERE / "catalogs"

PROFILES = f"""\
collections:
  segment/events: {{schema: {SCHEMAS}/event.schema.yaml, key: [/event]}}
  profile/events: {{schema: {SCHEMAS}/profile-event.schema.yaml, key: [/id]}}
  profile/records: {{schema: {SCHEMAS}/profile-record.schema.yaml, key: [/id], partitions: 6}}
profiles:
  groupVendor: 100
  properties:
    email: {{type: email, from: {{events: [identify], path: /data/email, aggregate: latest}}}}
    ltv: {{type: float, from: {{events: [purchase], path: /data/total, aggregate: sum}}}}
    plan: {{type: string, from: {{import: warehouse-users, column: plan}}}}
  groups:
    vip: {{rules: [{{property: ltv, op: gt, value: 500}}]}}
    buyers: {{rules: [{{property: ltv, op: gt, value: 0}}]}}
"""
WAREHOUSE = """\
warehouse-users:
  postgres: {dsn: "postgresql://w/h", table: users}
  watermark: updated_at
  identity: {userId: id}
"""


def load(
    tmp_path: Path, text: str = "", env: dict[str, str] | None = None, imports: str = ""
) -> Catalog:
    """PROFILES with `text` in one file; the `warehouse-users` import and `imports` (the
    blocks under `imports:`) in another."""
    (tmp_path / "catalog.yaml").write_text(PROFILES + textwrap.dedent(text))
    blocks = WAREHOUSE + textwrap.dedent(imports)
    (tmp_path / "imports.yaml").write_text("imports:\n" + textwrap.indent(blocks, "  "))
    return load_catalog(tmp_path, env={} if env is None else env)


def problems(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_catalog(path, env={})
    return [str(p) for p in caught.value.problems]


def test_every_problem_of_destinations_and_imports_is_reported_with_its_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`destinations:` and `imports:` in `segflow catalog check`: golden report."""
    monkeypatch.chdir(FIXTURES)
    expected = (FIXTURES / "broken-destinations.expected").read_text().splitlines()
    assert problems(Path("broken-destinations")) == expected


# --- destinations ------------------------------------------------------------------------------


def test_a_webhook_destination_with_defaults(tmp_path: Path) -> None:
    catalog = load(
        tmp_path,
        """\
        destinations:
          crm:
            webhook: {url: "https://crm.example.com/hook"}
            groups: {vip: VIP}
        """,
    )
    crm = catalog.destinations["crm"]
    assert (crm.name, crm.kind, crm.mode, crm.events, crm.enabled) == (
        "crm",
        "webhook",
        "sync",
        (),
        True,
    )
    assert dict(crm.config) == {"url": "https://crm.example.com/hook", "secret": ""}
    assert dict(crm.groups) == {"vip": "VIP"}
    assert dict(crm.properties) == {}


def test_a_webhook_destination_with_everything(tmp_path: Path) -> None:
    catalog = load(
        tmp_path,
        """\
        destinations:
          mailer.v2:
            webhook:
              url: "${MAILER_URL}"
              secret: "${MAILER_SECRET}"
              max_batch: 50
              timeout: 2s
              max_attempts: 3
            groups: {vip: VIP, buyers: Buyer}
            properties: {customer_email: email, uid: userId, rid: id, value: ltv}
            mode: additive
            events: [purchase, signin]
        """,
        env={"MAILER_URL": "http://localhost:9000/", "MAILER_SECRET": "007"},
    )
    mailer = catalog.destinations["mailer.v2"]
    assert dict(mailer.config) == {
        "url": "http://localhost:9000/",
        "secret": "007",
        "max_batch": "50",
        "max_attempts": "3",
        "timeout": "2.0",
    }
    assert dict(mailer.groups) == {"vip": "VIP", "buyers": "Buyer"}
    assert dict(mailer.properties) == {
        "customer_email": "email",
        "uid": "userId",
        "rid": "id",
        "value": "ltv",
    }
    assert (mailer.mode, mailer.events, mailer.enabled) == (
        "additive",
        ("purchase", "signin"),
        True,
    )


def test_a_postgres_destination(tmp_path: Path) -> None:
    text = """\
        destinations:
          warehouse:
            postgres: {dsn: "${CRM_DSN:-}", table: crm_people}
            groups: {buyers: B}
            mode: enrich
          tenant:
            postgres: {dsn: "postgresql://x/y", schema: tenant_1, table: people}
            groups: {vip: V}
        """
    catalog = load(tmp_path, text)
    warehouse = catalog.destinations["warehouse"]
    assert (warehouse.kind, warehouse.mode, warehouse.enabled) == ("postgres", "enrich", False)
    assert dict(warehouse.config) == {"dsn": "", "schema": "public", "table": "crm_people"}
    tenant = catalog.destinations["tenant"]
    assert tenant.enabled
    assert dict(tenant.config) == {
        "dsn": "postgresql://x/y",
        "schema": "tenant_1",
        "table": "people",
    }
    enabled = load(tmp_path, text, env={"CRM_DSN": "postgresql://crm/db"})
    assert enabled.destinations["warehouse"].enabled


def test_an_unset_url_disables_a_webhook_destination(tmp_path: Path) -> None:
    catalog = load(
        tmp_path,
        """\
        destinations:
          crm:
            webhook: {url: "${CRM_URL:-}"}
            groups: {vip: VIP}
        """,
    )
    assert not catalog.destinations["crm"].enabled


def test_the_shipped_destination_and_import_are_off_until_configured() -> None:
    catalog = load_catalog(HERE.parents[1] / "catalog", env={})
    assert [(d.name, d.enabled) for d in catalog.destinations.values()] == [("crm", False)]
    assert [(i.name, i.enabled) for i in catalog.imports.values()] == [("warehouse-users", False)]
    on = load_catalog(
        HERE.parents[1] / "catalog",
        env={"SEGFLOW_DESTINATION_URL": "http://127.0.0.1:1/crm", "SEGFLOW_WAREHOUSE_DSN": "x"},
    )
    assert on.destinations["crm"].enabled and on.imports["warehouse-users"].enabled


def test_events_declare_the_forwarded_collection_and_its_topic(tmp_path: Path) -> None:
    without = load(
        tmp_path,
        """\
        destinations:
          crm:
            webhook: {url: "https://crm.example.com/"}
            groups: {vip: VIP}
        """,
    )
    assert "profile/records.forwarded" not in without.collections
    catalog = load(
        tmp_path,
        """\
        destinations:
          crm:
            webhook: {url: "https://crm.example.com/"}
            groups: {vip: VIP}
          mailer:
            webhook: {url: "https://mailer.example.com/"}
            groups: {vip: VIP}
            events: [purchase]
        """,
    )
    forwarded = catalog.collections["profile/records.forwarded"]
    assert (forwarded.key, forwarded.partitions, forwarded.dedup_window) == (("/r",), 6, None)
    assert forwarded.schema.contents["required"] == ["r"]
    assert "profile/records.forwarded" not in catalog.derivations
    topics = pipeline_topics(catalog, Names("t."))
    assert topics["t.profile.records.forwarded"][0] == 6
    assert "t.profile.records.forwarded" not in pipeline_topics(without, Names("t."))


def test_a_destination_needs_the_profiles_section(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "destinations:\n  crm: {webhook: {url: 'https://crm.example.com/'}, groups: {vip: VIP}}\n"
    )
    assert problems(path) == [
        f"{path}: /destinations/crm: destination 'crm': destinations send profile records:"
        " the catalog needs a 'profiles:' section (SPEC 8)"
    ]


# --- imports -----------------------------------------------------------------------------------


def test_a_table_import_with_defaults(tmp_path: Path) -> None:
    users = load(tmp_path).imports["warehouse-users"]
    assert (users.name, users.dsn, users.table, users.query) == (
        "warehouse-users",
        "postgresql://w/h",
        "users",
        None,
    )
    assert (users.watermark, users.interval, users.page_size) == ("updated_at", 60.0, 1000)
    assert (users.identity, users.enabled) == (("userId", "id"), True)


def test_query_and_schema_qualified_imports(tmp_path: Path) -> None:
    catalog = load(
        tmp_path,
        imports="""\
          devices:
            postgres: {dsn: "${DEVICES_DSN:-}", query: "SELECT id, anon, seen FROM devices"}
            watermark: seen
            interval: 5m
            pageSize: 1000000
            identity: {anonymousId: anon}
          plans:
            postgres: {dsn: "postgresql://w/h", table: billing.plans}
            watermark: changed
            interval: 500ms
            identity: {userId: user_id}
        """,
    )
    devices = catalog.imports["devices"]
    assert (devices.table, devices.query) == (None, "SELECT id, anon, seen FROM devices")
    assert (devices.interval, devices.page_size, devices.identity) == (
        300.0,
        1_000_000,
        ("anonymousId", "anon"),
    )
    assert not devices.enabled
    plans = catalog.imports["plans"]
    assert (plans.table, plans.query, plans.interval, plans.enabled) == (
        "billing.plans",
        None,
        0.5,
        True,
    )
    assert set(catalog.imports) == {"warehouse-users", "devices", "plans"}


def test_an_import_no_property_reads_is_fine(tmp_path: Path) -> None:
    catalog = load(
        tmp_path,
        imports="""\
        unread:
          postgres: {dsn: "postgresql://w/h", table: other}
          watermark: updated_at
          identity: {userId: id}
        """,
    )
    assert set(catalog.imports) == {"warehouse-users", "unread"}


def test_a_property_from_an_undeclared_import(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(PROFILES)
    assert problems(tmp_path / "catalog.yaml") == [
        f"{tmp_path / 'catalog.yaml'}: /profiles/properties/plan/from/import: property 'plan':"
        " import 'warehouse-users' is not a declared import"
    ]
