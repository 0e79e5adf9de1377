"""The one FunctionApp of ShipBot. It creates the app and registers the blueprints of functions/, nothing
else: importing it has no side effects (clients are built lazily, on first use).

The triggers (model uploaded, image pushed, git webhook, timers, the manual API) arrive with the release
engine; see ../shared/ARCHITECTURE.md and the README.
"""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
