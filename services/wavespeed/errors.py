"""The typed errors of the WaveSpeed service layer.

Every failure that leaves the service layer is one of these. Each carries the prediction id when
there is one (so a paid job can always be traced) and `user_message`, a sentence fit to show a
Discord member. Raw aiohttp exceptions never leave the layer; `__cause__` keeps them for the logs.
"""

from __future__ import annotations

from typing import ClassVar


class KontextError(Exception):
    """Base of every error the WaveSpeed service layer raises."""

    default_message = "Something went wrong while talking to the image service."
    # True where the message is the bot's own words with its own formatting (bold, a menu
    # path) and quotes nobody: shown as it is. Otherwise it may quote a member or the image
    # service and is shown as plain text.
    own_words: ClassVar[bool] = False

    def __init__(
        self,
        user_message: str | None = None,
        *,
        prediction_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.user_message = user_message or self.default_message
        self.prediction_id = prediction_id
        # `detail` is for operators' logs: the server's own words, never a secret.
        self.detail = detail
        super().__init__(self.user_message)

    def __str__(self) -> str:
        parts = [self.user_message]
        if self.prediction_id:
            parts.append(f"(prediction {self.prediction_id})")
        if self.detail:
            parts.append(f"[{self.detail}]")
        return " ".join(parts)


class AuthenticationError(KontextError):
    """WaveSpeed refused the API key (HTTP 401/403)."""

    default_message = (
        "The image service rejected this bot's API key. The server owner needs to check it."
    )


class InsufficientCreditError(KontextError):
    """The account has no credit left for this request (HTTP 402, or a message saying so).

    WaveSpeed documents no code for it, so its own message goes to `detail` (the logs) and
    the member reads the bot's words: what happened, that it cost nothing, and who can fix it.
    Raised by a submit, the request was refused: nothing was made.
    """

    own_words: ClassVar[bool] = True
    default_message = (
        "This bot's WaveSpeed account is out of credit, so nothing was made and nothing was "
        "charged. The server owner needs to top it up at wavespeed.ai."
    )


class RateLimitedError(KontextError):
    """WaveSpeed answered 429 and the retries ran out."""

    default_message = "The image service is busy right now. Please try again in a minute."

    def __init__(
        self,
        user_message: str | None = None,
        *,
        retry_after: float | None = None,
        **kwargs: str | None,
    ) -> None:
        super().__init__(user_message, **kwargs)
        self.retry_after = retry_after


class ModeratedError(KontextError):
    """The prompt or the result was blocked by content moderation (code 1200)."""

    default_message = (
        "The image service's content filter blocked this request. Try a different instruction."
    )


class InvalidInputError(KontextError):
    """A parameter is missing or out of range (checked locally, or code 1400/1401)."""

    default_message = "Some of the options for this request are not valid."

    def __init__(
        self, user_message: str | None = None, *, field: str | None = None, **kwargs: str | None
    ) -> None:
        super().__init__(user_message, **kwargs)
        self.field = field


class MediaUnreachableError(KontextError):
    """WaveSpeed could not fetch an input image (code 1402)."""

    default_message = "The image service could not read the input image. Please upload it again."


class TaskFailedError(KontextError):
    """The prediction ended as failed, cancelled, timeout or deleted (code 1403/1405)."""

    default_message = "The image service could not finish this image."

    def __init__(
        self, user_message: str | None = None, *, status: str | None = None, **kwargs: str | None
    ) -> None:
        super().__init__(user_message, **kwargs)
        self.status = status


class SubmissionUnknownError(KontextError):
    """The submit request may have reached WaveSpeed, but its answer was lost.

    The job may exist and may be billed, so it is deliberately not resubmitted: a second POST
    could bill twice. Whoever holds the job decides what to tell the member.
    """

    default_message = (
        "The connection to the image service broke while submitting. The job may exist; "
        "it was not resubmitted, so it is not billed twice."
    )


class TimedOutError(KontextError):
    """The prediction did not finish, or could not be read, before the waiting deadline.

    It may still finish at WaveSpeed (it may be billed): `prediction_id` is kept so whoever
    holds the job can look again later instead of submitting it twice.
    """

    default_message = "The image service is taking too long with this image."


class ServerError(KontextError):
    """WaveSpeed failed on its side (5xx, code 5000/5003) or answered something unreadable.

    Raised by a submit, it means the request was refused (WaveSpeed's own envelope said it did
    nothing): no job exists, so sending it again later cannot bill twice. A submit whose failure
    may hide an accepted job raises SubmissionUnknownError instead.
    """

    default_message = "The image service had a problem on its side. Please try again later."


class WebhookVerificationError(KontextError):
    """A webhook delivery's signature or timestamp did not check out."""

    default_message = "A webhook delivery could not be verified."
