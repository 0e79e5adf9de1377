"""The errors model_api answers with. Each carries its HTTP status; the app turns any of them into JSON.

    ApiError                 status
    +- BadRequest            400  the body is not JSON / not UTF-8 / not an object
    +- NotFound              404  no such route or model name
    +- MethodNotAllowed      405
    +- PayloadTooLarge       413  body over MODEL_API_MAX_BODY_BYTES
    +- InvalidInput          422  JSON, but the wrong shape, type or feature count
    +- ScoringFailed         500  the entry script's run() raised
    +- ModelNotReady         503  still loading, warming up, or failed to load
    +- ScoringTimeout        504  run() overran MODEL_API_SCORING_TIMEOUT_S

An entry script may raise InvalidInput itself (the default one does) to answer 422 instead of 500.
"""


class ApiError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class PayloadTooLarge(ApiError):
    status = 413


class InvalidInput(ApiError):
    status = 422


class ScoringFailed(ApiError):
    status = 500


class ModelNotReady(ApiError):
    status = 503


class ScoringTimeout(ApiError):
    status = 504
