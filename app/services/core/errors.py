"""Errors as values: a stable code, an HTTP-style status and details, raised anywhere below the routers.

`app/http/errors.py` turns them into the one JSON error shape; nothing here knows about HTTP frameworks.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    code = "INTERNAL_ERROR"
    status = 500
    message = "Internal server error."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message or self.message
        self.details = details or {}
        self.retry_after = retry_after
        super().__init__(self.message)


class InvalidImage(ApiError):
    code = "INVALID_IMAGE"
    status = 400
    message = "The body is not a decodable JPEG, PNG or WebP image."


class ImageTooLarge(ApiError):
    code = "IMAGE_TOO_LARGE"
    status = 413
    message = "The image exceeds the size limit."


class PayloadTooLarge(ApiError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413
    message = "The request body exceeds the size limit."


class UnsupportedMediaType(ApiError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415
    message = "Send multipart/form-data or image/jpeg, image/png, image/webp."


class SessionNotFound(ApiError):
    code = "SESSION_NOT_FOUND"
    status = 404
    message = "No such session, or it has expired."


class SessionEnded(ApiError):
    code = "SESSION_ENDED"
    status = 409
    message = "The session has ended."


class RateLimited(ApiError):
    code = "RATE_LIMITED"
    status = 429
    message = "Too many frames for this session; slow down."


class SessionCreationLimited(ApiError):
    code = "RATE_LIMITED"
    status = 429
    message = "Too many sessions opened from this client; wait before opening another."


class RequestTimeout(ApiError):
    code = "REQUEST_TIMEOUT"
    status = 408
    message = "The request body did not arrive in time."


class Overloaded(ApiError):
    code = "OVERLOADED"
    status = 503
    message = "The detector is at capacity; retry shortly."


class ModelNotReady(ApiError):
    code = "MODEL_NOT_READY"
    status = 503
    message = "The model is not loaded yet or failed to load."


class SessionStoreUnavailable(ApiError):
    code = "SESSION_STORE_UNAVAILABLE"
    status = 503
    message = "The session store is unavailable."


class DeadlineExceeded(ApiError):
    code = "DEADLINE_EXCEEDED"
    status = 504
    message = "The request could not be served before its deadline."


class ShuttingDown(ApiError):
    code = "SHUTTING_DOWN"
    status = 503
    message = "The service is shutting down."


class ValidationFailed(ApiError):
    code = "VALIDATION_ERROR"
    status = 422
    message = "The request is not valid."


class MediaNotFound(ApiError):
    code = "MEDIA_NOT_FOUND"
    status = 404
    message = "No such media file."


class ModelNotFound(ApiError):
    code = "MODEL_NOT_FOUND"
    status = 404
    message = "No such model version in the repository."


class ModelNotLoaded(ApiError):
    code = "MODEL_NOT_LOADED"
    status = 409
    message = "The model version is not loaded; load it first."


class ModelActive(ApiError):
    code = "MODEL_ACTIVE"
    status = 409
    message = "The active model version cannot be unloaded; activate another one first."


class ModelMemoryLimit(ApiError):
    code = "MODEL_MEMORY_LIMIT"
    status = 409
    message = "Loading this model version would exceed MODEL_MEMORY_LIMIT_MB."


class ModelLoadFailed(ApiError):
    code = "MODEL_LOAD_FAILED"
    status = 422
    message = "The model version could not be loaded."


class Unauthorized(ApiError):
    code = "UNAUTHORIZED"
    status = 401
    message = "Authentication required."


class AdminDisabled(ApiError):
    code = "ADMIN_DISABLED"
    status = 503
    message = "Administration is disabled: no admin password is configured."


class TooManyLoginAttempts(ApiError):
    code = "RATE_LIMITED"
    status = 429
    message = "Too many failed logins; wait before trying again."


class FleetStateUnavailable(ApiError):
    code = "FLEET_STATE_UNAVAILABLE"
    status = 503
    message = "The fleet state in Redis is unavailable; each process keeps serving what it has."


class ProcessNotFound(ApiError):
    code = "PROCESS_NOT_FOUND"
    status = 404
    message = "No running process of the fleet has that id or role."


class HazardMapUnavailable(ApiError):
    code = "HAZARD_MAP_UNAVAILABLE"
    status = 503
    message = "The hazard map in Redis is unavailable."


CLIENT_DISCONNECTED = "client_disconnected"  # the `reason` of the access line of a request the client abandoned


class JobNotFound(ApiError):
    code = "JOB_NOT_FOUND"
    status = 404
    message = "No such job, or its results have expired."


class JobNotOpen(ApiError):
    code = "JOB_NOT_OPEN"
    status = 409
    message = "The job is closed or cancelled: it takes no more frames."


class JobFinished(ApiError):
    code = "JOB_FINISHED"
    status = 409
    message = "The job has already finished; there is nothing left to cancel."


class FrameExpired(ApiError):
    code = "FRAME_EXPIRED"
    status = 410
    message = "The frame waited for a worker longer than JOB_FRAME_TTL_SECONDS; send it again."


class Backpressure(ApiError):
    code = "BACKPRESSURE"
    status = 429
    message = "Too many frame bytes are waiting for a worker; retry after the delay."


class QueueUnavailable(ApiError):
    code = "QUEUE_UNAVAILABLE"
    status = 503
    message = "The job queue cannot be reached; retry shortly."


class IngestDisabled(ApiError):
    code = "INGEST_DISABLED"
    status = 404
    message = "Server-side ingestion is off (INGEST_ROOT is not set)."


class IngestRefused(ApiError):
    code = "INGEST_REFUSED"
    status = 400
    message = "Server-side ingestion is off, or the path is not below the allowed root."


class ClientClosedRequest(ApiError):
    """The client went away before its request was read (nginx's 499): logged and counted, never documented,
    since no client ever receives it."""

    code = "CLIENT_CLOSED_REQUEST"
    status = 499
    message = "The client closed the connection before the request was read."


# The control center (login-protected pages under /admin; not part of the documented API).


class CrossSiteRequestRefused(ApiError):
    code = "CSRF_REFUSED"
    status = 403
    message = "Refused: the request did not come from the control center's own pages."


class OperatorSessionUnavailable(ApiError):
    code = "ADMIN_SESSION_UNAVAILABLE"
    status = 503
    message = "Operator sessions cannot be read or written: Redis cannot be reached."


# Identity (API keys, scopes, operator accounts): app/services/identity.


class AuthRequired(ApiError):
    code = "AUTH_REQUIRED"
    status = 401
    message = "An API key is required: send it as `Authorization: Bearer <key>` or `X-API-Key`."


class InvalidApiKey(ApiError):
    """One message for unknown, revoked, expired and malformed keys: the answer tells nothing about which."""

    code = "INVALID_API_KEY"
    status = 401
    message = "The API key is not valid."


class ScopeRequired(ApiError):
    code = "SCOPE_REQUIRED"
    status = 403
    message = "The API key lacks the scope this needs."


class RoleRequired(ApiError):
    code = "ROLE_REQUIRED"
    status = 403
    message = "The operator's role does not allow this."


class KeyAttemptsLimited(ApiError):
    code = "RATE_LIMITED"
    status = 429
    message = "Too many failed API key attempts from this address; wait before trying again."


class TlsRequired(ApiError):
    code = "TLS_REQUIRED"
    status = 403
    message = "API keys are accepted over HTTPS only: this request carried a key over plain HTTP."


class KeyFrameRateLimited(ApiError):
    code = "RATE_LIMITED"
    status = 429
    message = "Too many frames for this API key; slow down."


class ApiKeyNotFound(ApiError):
    code = "API_KEY_NOT_FOUND"
    status = 404
    message = "No such API key."


class OperatorAccountNotFound(ApiError):
    code = "OPERATOR_NOT_FOUND"
    status = 404
    message = "No such operator account."


class OperatorAccountExists(ApiError):
    code = "OPERATOR_EXISTS"
    status = 409
    message = "An operator account of that name already exists."


class IdentityStoreUnavailable(ApiError):
    code = "IDENTITY_STORE_UNAVAILABLE"
    status = 503
    message = "API keys and operator accounts cannot be read or written: Redis cannot be reached."


# The hazard registry (durable records, lifecycle, exports): app/services/registry.


class HazardNotFound(ApiError):
    code = "HAZARD_NOT_FOUND"
    status = 404
    message = "No such hazard in the registry."


class TransitionNotAllowed(ApiError):
    code = "TRANSITION_NOT_ALLOWED"
    status = 409
    message = "The hazard's status does not allow that move; `details.allowed` lists the moves it does."


class RegistryUnavailable(ApiError):
    code = "REGISTRY_UNAVAILABLE"
    status = 503
    message = "The hazard registry's database cannot be reached."


class WebhookNotFound(ApiError):
    code = "WEBHOOK_NOT_FOUND"
    status = 404
    message = "No such webhook, or no such dead delivery."
