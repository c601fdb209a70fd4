"""Operator settings come from the environment; images and tags are configurable."""

from __future__ import annotations

from tiered_operator.settings import OperatorSettings


def test_defaults_without_environment() -> None:
    s = OperatorSettings.from_env({})
    assert s.field_manager == "tiered-operator"
    assert s.namespaces == ()
    assert s.slm_image.endswith(":0.1.0") and s.router_image.endswith(":0.1.0")


def test_image_tag_retags_both_project_images_and_explicit_images_win() -> None:
    s = OperatorSettings.from_env(
        {"TIERED_IMAGE_TAG": "1.2.3", "TIERED_ROUTER_IMAGE": "registry.local:5000/router:dev"}
    )
    assert s.slm_image == "ghcr.io/tiered-dev/tiered-slm:1.2.3"
    assert s.router_image == "registry.local:5000/router:dev"


def test_namespaces_prometheus_and_resync_from_environment() -> None:
    s = OperatorSettings.from_env(
        {
            "TIERED_WATCH_NAMESPACES": "a, b,,",
            "TIERED_PROMETHEUS_URL": "http://prom:9090",
            "TIERED_RESYNC_SECONDS": "5",
            "TIERED_FIELD_MANAGER": "other",
        }
    )
    assert s.namespaces == ("a", "b")
    assert s.prometheus_url == "http://prom:9090"
    assert s.resync_seconds == 5.0
    assert s.field_manager == "other"
