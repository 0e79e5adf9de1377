"""The one FunctionApp of ShipBot: it creates the app and registers the blueprints of functions/, nothing else.
Importing it has no side effects: the engine and its clients are built on first use (functions/common.py).
"""

import azure.functions as func

from functions import api, git_webhook, image_pushed, model_registered, model_uploaded, timers, work

BLUEPRINTS = tuple(module.bp for module in (model_uploaded, model_registered, image_pushed, git_webhook, timers, work,
                                            api))

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in BLUEPRINTS:
    app.register_functions(blueprint)
