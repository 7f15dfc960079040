"""The WaveSpeed service layer: model table, validation, the async client, webhooks, errors."""

from .catalog import (
    DEFAULT_FAMILY,
    MODELS,
    Family,
    KontextRequest,
    ModelKind,
    ModelSpec,
    estimate_cost,
    model_for_path,
    pick_model,
    validate_request,
)
from .client import (
    GeneratedImage,
    GenerationResult,
    Submission,
    WaveSpeedClient,
    create_session,
)
from .errors import (
    AuthenticationError,
    InsufficientCreditError,
    InvalidInputError,
    KontextError,
    MediaUnreachableError,
    ModeratedError,
    RateLimitedError,
    ServerError,
    SubmissionUnknownError,
    TaskFailedError,
    TimedOutError,
    WebhookVerificationError,
)
from .media import InputImage
from .protocol import ListedPrediction, Prediction, Status
from .webhooks import WebhookInbox

__all__ = [
    "DEFAULT_FAMILY",
    "MODELS",
    "AuthenticationError",
    "Family",
    "GeneratedImage",
    "GenerationResult",
    "InputImage",
    "InsufficientCreditError",
    "InvalidInputError",
    "KontextError",
    "KontextRequest",
    "ListedPrediction",
    "MediaUnreachableError",
    "ModelKind",
    "ModelSpec",
    "ModeratedError",
    "Prediction",
    "RateLimitedError",
    "ServerError",
    "Status",
    "Submission",
    "SubmissionUnknownError",
    "TaskFailedError",
    "TimedOutError",
    "WaveSpeedClient",
    "WebhookInbox",
    "WebhookVerificationError",
    "create_session",
    "estimate_cost",
    "model_for_path",
    "pick_model",
    "validate_request",
]
