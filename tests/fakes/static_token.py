"""A TokenCredential that hands out one fixed token and records the scopes it was asked for: what the real
Azure SDK clients get in tests instead of DefaultAzureCredential (azure-core accepts any TokenCredential)."""

from __future__ import annotations

import time

from azure.core.credentials import AccessToken


class StaticToken:
    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    def close(self) -> None:
        pass
