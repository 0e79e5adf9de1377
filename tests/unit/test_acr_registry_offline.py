"""AcrRegistry without a registry: names it refuses before any request, and a registry that does not answer.
Everything that needs a registry is in tests/contract (the port) and tests/integration/test_acr_registry.py."""

from __future__ import annotations

import socket

import pytest

from shared import errors
from shared.adapters.azure.acr_registry import AcrRegistry

NOWHERE = "127.0.0.1:9"  # nothing listens there: a request would be a TransientError, not what is asserted


@pytest.mark.parametrize(("repository", "reference"), [
    ("Shipbot/App", "latest"), ("shipbot/app", "-rm"), ("shipbot/app", "sha256:short"), ("../x", "latest"),
])
def test_names_the_distribution_grammar_refuses_are_not_found_without_a_request(repository, reference):
    with pytest.raises(errors.NotFound, match="not a valid"):
        AcrRegistry(host=NOWHERE, scheme="http").get_image(repository, reference)


@pytest.mark.parametrize(("digest", "tag", "error"), [
    ("latest", "r-1", errors.NotFound),                   # promotion is by digest, never by a mutable tag
    ("sha256:" + "0" * 64, "-bad", errors.PermanentError),
])
def test_a_promotion_by_tag_or_to_an_invalid_tag_is_refused_without_a_request(digest, tag, error):
    with pytest.raises(error):
        AcrRegistry(host=NOWHERE, scheme="http").promote("shipbot/app", digest, target_repository="shipbot/prod",
                                                         tag=tag)


def test_a_registry_that_does_not_answer_is_a_transient_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        registry = AcrRegistry(host=f"127.0.0.1:{s.getsockname()[1]}", scheme="http", retry_total=0)
        with pytest.raises(errors.TransientError, match="did not answer"):
            registry.get_image("shipbot/app", "latest")
        with pytest.raises(errors.TransientError, match="did not answer"):
            registry.promote("shipbot/app", "sha256:" + "0" * 64, target_repository="shipbot/prod", tag="r-1")


def test_only_http_and_https_are_schemes():
    with pytest.raises(ValueError):
        AcrRegistry(host=NOWHERE, scheme="ftp")
