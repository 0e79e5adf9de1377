"""ShipBot's errors. Only functions/ decides between answering and re-raising; adapters translate SDK errors
at the boundary (`raise TransientError(...) from e`) and never put secrets or SAS URLs in a message.

    ReleaseError
    +- InvalidEvent      cannot be understood -> log and drop (HTTP 400)
    +- NotFound          no such release, environment, commit, model or image (HTTP 404)
    +- Exists            create_ of something that exists: a duplicate delivery (HTTP 409)
    +- PermanentError    retrying will not help -> record the failure in the ledger (HTTP 409/422)
    |  +- BuildFailed    the image did not build or push; carries the tail of the build log
    |  +- Refused        the request is understood but not allowed now (a downgrade, a held release; HTTP 409)
    +- TransientError    try again -> re-raise so the host / Event Grid retries (HTTP 503)
       +- LedgerConflict ETag mismatch on write, still after the retries
       +- LeaseBusy      another rollout holds the environment's lease
"""


class ReleaseError(Exception):
    pass


class InvalidEvent(ReleaseError):
    pass


class NotFound(ReleaseError):
    pass


class Exists(ReleaseError):
    pass


class PermanentError(ReleaseError):
    pass


class BuildFailed(PermanentError):
    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class Refused(PermanentError):
    pass


class TransientError(ReleaseError):
    pass


class LedgerConflict(TransientError):
    pass


class LeaseBusy(TransientError):
    pass
