"""Identity, grants and budgets."""

from __future__ import annotations

from conftest import Service

from unseen_client import Client, Grant, GrantBudget


def test_me_names_the_token_holder(dev: Client, service: Service) -> None:
    me = dev.me()
    assert (me.user, me.role) == ("dev", "developer")
    assert service.client("rev").me().role == "reviewer"


def test_service_is_healthy_and_ready(dev: Client) -> None:
    assert dev.health()
    ready = dev.ready()
    assert ready.ready and ready.checks == {"keys": "ok", "ledger": "ok", "store": "ok"}


def test_a_developer_lists_the_grants_they_are_designated_on(dev: Client, service: Service) -> None:
    grants = {g.id: g for g in dev.grants()}
    assert {service.grant, service.readme_grant, service.sme_grant} <= set(grants)
    g = grants[service.grant]
    assert isinstance(g, Grant)
    assert (g.dataset, g.developer, g.purpose) == ("residents", "dev", "housing plan")
    assert (g.epsilon_total, g.query_epsilon) == (100.0, 1.0)
    assert g.allow_sql and g.allow_modules and not g.allow_extracts and not g.revoked
    sme = grants[service.sme_grant]
    assert sme.join_datasets == ("tax_records", "utility_usage") and sme.allow_udfs
    assert dev.grant(service.grant) == g


def test_the_budget_shows_every_layer(dev: Client, service: Service) -> None:
    budget = dev.budget(service.grant)
    assert isinstance(budget, GrantBudget)
    assert budget.grant == service.grant
    assert budget.epsilon_spent + budget.epsilon_left == 100.0
    layers = {layer.layer: layer for layer in budget.layers}
    assert set(layers) == {"grant", "dataset", "developer"}
    assert (layers["grant"].id, layers["grant"].total) == (service.grant, 100.0)
    assert layers["dataset"].id == "residents" and layers["dataset"].total is None
    assert layers["dataset"].left is None
    assert layers["developer"].id == "dev"


def test_usage_hides_what_guests_chose_from_the_developer(dev: Client, service: Service) -> None:
    usage = dev.usage(service.grant)
    assert usage.grant == service.grant
    assert usage.fuel_used is None and usage.queries is None and usage.outputs is None
    admin_view = service.client("admin").usage(service.grant)
    assert admin_view.queries is not None


def test_datasets_are_listed(dev: Client) -> None:
    names = {d.name: d for d in dev.datasets()}
    assert {"residents", "enterprises", "tax_records", "utility_usage"} <= set(names)
    assert names["residents"].rows == 3000
