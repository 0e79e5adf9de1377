"""shared/adapters/azure/credentials.py: the storage URL check that keeps secrets out of Azure mode, and the
credential finding a managed identity the way it does in a Function App: App Service's identity endpoint
(IDENTITY_ENDPOINT + IDENTITY_HEADER), served here by a small local HTTP server that speaks its protocol."""

from __future__ import annotations

import pytest

from shared import errors
from shared.adapters.azure import credentials
from tests.fakes import identity_endpoint as identity

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.mark.parametrize(("value", "expected"), [
    ("https://shipbot.blob.core.windows.net", "https://shipbot.blob.core.windows.net"),
    ("https://shipbot.blob.core.windows.net/", "https://shipbot.blob.core.windows.net"),
    (" https://shipbot.blob.core.chinacloudapi.cn ", "https://shipbot.blob.core.chinacloudapi.cn"),
    ("https://127.0.0.1:10000/devstoreaccount1", "https://127.0.0.1:10000/devstoreaccount1"),
])
def test_an_account_url_is_accepted_without_its_trailing_slash(value, expected):
    assert credentials.blob_account_url(value) == expected


@pytest.mark.parametrize(("value", "complaint"), [
    (f"DefaultEndpointsProtocol=https;AccountName=shipbot;AccountKey={KEY};EndpointSuffix=core.windows.net",
     "connection string"),
    (f"https://shipbot.blob.core.windows.net/?sv=2024-11-04&ss=b&sig={KEY[:43]}", "connection string, key or SAS"),
    ("http://shipbot.blob.core.windows.net", "https"),
    ("https://user:pw@shipbot.blob.core.windows.net", "user info"),
    ("https://shipbot.blob.core.windows.net/ledger/releases", "not a container"),
    ("shipbot.blob.core.windows.net", "https"),
    ("", "empty"),
])
def test_a_value_carrying_a_secret_or_not_naming_an_account_is_refused_without_being_quoted(value, complaint):
    with pytest.raises(errors.PermanentError, match=complaint) as caught:
        credentials.blob_account_url(value)
    assert KEY[:20] not in str(caught.value) and "pw@" not in str(caught.value)


def test_blob_container_builds_a_client_on_the_checked_url_with_the_credential():
    class Credential:
        def get_token(self, *scopes, **kwargs):
            raise AssertionError("no request is made")

    token = Credential()
    container = credentials.blob_container("https://shipbot.blob.core.windows.net/", "ledger", token)

    assert container.url == "https://shipbot.blob.core.windows.net/ledger"
    assert container.credential is token
    with pytest.raises(errors.PermanentError):
        credentials.blob_container(f"AccountName=x;AccountKey={KEY}", "ledger", token)


@pytest.fixture
def identity_endpoint(monkeypatch):
    with identity.IdentityEndpoint() as endpoint:
        identity.use(monkeypatch, endpoint)
        yield endpoint


def test_the_credential_is_the_apps_user_assigned_identity_when_a_client_id_is_given(identity_endpoint):
    token = credentials.credential(managed_identity_client_id="1111-aaaa").get_token(
        "https://storage.azure.com/.default")

    assert token.token == "token-for-1111-aaaa"
    path, query, header = identity_endpoint.seen[-1]
    assert path == "/msi/token"
    assert query["client_id"] == "1111-aaaa"
    assert query["resource"] == "https://storage.azure.com"
    assert header == identity.SECRET


def test_without_a_client_id_the_credential_is_the_system_assigned_identity(identity_endpoint):
    token = credentials.credential().get_token("https://management.azure.com/.default")

    assert token.token == "token-for-system"
    assert "client_id" not in identity_endpoint.seen[-1][1]
