"""REST routes for interactions: the callback, webhook followups and `@original`.

The two clocks of an interaction are enforced here: the callback must come within 3 s of the
interaction (else 10062 Unknown interaction), and the token works for 15 minutes (after that
401, 50027 Invalid Webhook Token; a token Discord never issued is 404, 10015 Unknown Webhook).
Both are measured on the test's clock, so `discord.clock.advance(15 * 60)` expires a token at
once.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .bodies import (
    attachments_for,
    check_files,
    check_limits,
    check_not_empty,
    content_fields,
    pinged,
    requested_flags,
)
from .models import CallbackType, Interaction, InteractionType, Message, MessageFlag, MessageType
from .payloads import interaction_metadata
from .rest import Call, RouteTable, json_response, no_content
from .routes_channels import edit_fields
from .rules import (
    ALREADY_ACKNOWLEDGED,
    INVALID_FORM_BODY,
    INVALID_WEBHOOK_TOKEN,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    DiscordError,
    check_modal,
    form_error,
)

log = logging.getLogger(__name__)

routes = RouteTable()

# Which callbacks each interaction type may answer with.
ALLOWED_CALLBACKS: dict[InteractionType, set[CallbackType]] = {
    InteractionType.PING: {CallbackType.PONG},
    InteractionType.APPLICATION_COMMAND: {
        CallbackType.CHANNEL_MESSAGE,
        CallbackType.DEFERRED_CHANNEL_MESSAGE,
        CallbackType.MODAL,
    },
    InteractionType.MESSAGE_COMPONENT: {
        CallbackType.CHANNEL_MESSAGE,
        CallbackType.DEFERRED_CHANNEL_MESSAGE,
        CallbackType.DEFERRED_UPDATE_MESSAGE,
        CallbackType.UPDATE_MESSAGE,
        CallbackType.MODAL,
    },
    InteractionType.AUTOCOMPLETE: {CallbackType.AUTOCOMPLETE_RESULT},
    InteractionType.MODAL_SUBMIT: {
        CallbackType.CHANNEL_MESSAGE,
        CallbackType.DEFERRED_CHANNEL_MESSAGE,
        CallbackType.DEFERRED_UPDATE_MESSAGE,
        CallbackType.UPDATE_MESSAGE,
    },
}


def _message_type(interaction: Interaction) -> MessageType:
    if interaction.type is InteractionType.APPLICATION_COMMAND:
        if interaction.data.get("type", 1) == 1:
            return MessageType.CHAT_INPUT_COMMAND
        return MessageType.CONTEXT_MENU_COMMAND
    return MessageType.DEFAULT


@routes.add("POST", "/interactions/{interaction_id}/{interaction_token}/callback", auth=False)
async def callback(call: Call) -> web.Response:
    state = call.state
    interaction = state.interactions.get(call.snowflake("interaction_id"))
    if interaction is None or interaction.token != call.params["interaction_token"]:
        raise DiscordError(
            404,
            UNKNOWN_INTERACTION,
            "Unknown interaction",
            violation=True,
            detail="no interaction with that id and token",
        )
    if interaction.acknowledged:
        raise DiscordError(
            400,
            ALREADY_ACKNOWLEDGED,
            "Interaction has already been acknowledged.",
            violation=True,
            detail=f"second callback for interaction {interaction.id}",
        )
    age = state.clock.now() - interaction.created_at
    deadline = call.discord.config.ack_deadline_s
    if age > deadline:
        raise DiscordError(
            404,
            UNKNOWN_INTERACTION,
            "Unknown interaction",
            violation=True,
            detail=f"acknowledged {age:.2f}s after the interaction; Discord "
            f"allows {deadline:g}s (defer first)",
        )
    body: dict[str, Any] = call.body or {}
    kind = CallbackType(int(body["type"]))
    if kind not in ALLOWED_CALLBACKS[interaction.type]:
        raise DiscordError(
            400,
            INVALID_FORM_BODY,
            "Invalid Form Body",
            violation=True,
            errors={
                "type": {
                    "_errors": [
                        {
                            "code": "INTERACTION_CALLBACK_TYPE_INVALID",
                            "message": "Invalid callback type",
                        }
                    ]
                }
            },
            detail=f"callback {kind.name} to a {interaction.type.name} interaction",
        )
    data: dict[str, Any] = body.get("data") or {}
    message = _respond(call, interaction, kind, data)
    interaction.callback_type = kind
    interaction.acknowledged_at = state.clock.now()
    log.info("interaction %s acknowledged with %s after %.2fs", interaction.id, kind.name, age)
    if not call.flag("with_response"):
        return no_content()
    return json_response(_callback_response(call, interaction, kind, message))


def _respond(
    call: Call, interaction: Interaction, kind: CallbackType, data: dict[str, Any]
) -> Message | None:
    state = call.state
    channel = state.channels[interaction.channel_id]
    if kind in (CallbackType.CHANNEL_MESSAGE, CallbackType.DEFERRED_CHANNEL_MESSAGE):
        loading = kind is CallbackType.DEFERRED_CHANNEL_MESSAGE
        if not loading:
            check_limits(data, ("data",))
            check_not_empty(data, call.files)
            check_files(call.files, interaction.attachment_size_limit, "this interaction")
        flags = requested_flags(data) & (MessageFlag.EPHEMERAL if loading else ~0)
        ephemeral = bool(flags & MessageFlag.EPHEMERAL)
        fields = content_fields({} if loading else data)
        message = state.post_message(
            channel,
            state.bot_user,
            **fields,
            flags=flags | (MessageFlag.LOADING if loading else 0),
            attachments=attachments_for(state, channel.id, data, call.files, ephemeral=ephemeral)
            or [],
            type=_message_type(interaction),
            webhook_id=state.application_id,
            application_id=state.application_id,
            interaction_metadata=interaction_metadata(
                interaction, parent=state.interactions.get(interaction.parent_id or 0)
            ),
            interaction_id=interaction.id,
            ephemeral_to=interaction.user.id if ephemeral else None,
            pings=pinged(state, channel, fields["content"], data.get("allowed_mentions"), None),
        )
        interaction.original_message_id = message.id
        interaction.awaiting_first_followup = loading
        return message
    if kind in (CallbackType.DEFERRED_UPDATE_MESSAGE, CallbackType.UPDATE_MESSAGE):
        target = _component_message(call, interaction)
        interaction.original_message_id = target.id
        if kind is CallbackType.UPDATE_MESSAGE:
            check_limits(data, ("data",))
            check_files(call.files, interaction.attachment_size_limit, "this interaction")
            edit_fields(call, target, data)
            return target
        return None
    if kind is CallbackType.MODAL:
        errors = check_modal(data)
        if errors:
            raise form_error(errors)
        interaction.modal = data
        return None
    return None


def _component_message(call: Call, interaction: Interaction) -> Message:
    """The message a component sits on (for a modal submit: the one that opened the modal)."""
    message_id = interaction.message_id
    if message_id is None and interaction.parent_id is not None:
        message_id = call.state.interactions[interaction.parent_id].message_id
    message = call.state.messages.get(message_id) if message_id else None
    if message is None or message.deleted:
        raise DiscordError(
            400,
            INVALID_FORM_BODY,
            "Invalid Form Body",
            violation=True,
            detail="message update for an interaction that has no message",
        )
    return message


def _callback_response(
    call: Call, interaction: Interaction, kind: CallbackType, message: Message | None
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "id": str(interaction.id),
        "type": int(interaction.type),
        "activity_instance_id": None,
        "response_message_loading": kind is CallbackType.DEFERRED_CHANNEL_MESSAGE,
        "response_message_ephemeral": bool(message is not None and message.ephemeral),
    }
    result: dict[str, Any] = {"interaction": summary}
    if message is not None:
        summary["response_message_id"] = str(message.id)
    # The spec knows resources for CHANNEL_MESSAGE and UPDATE_MESSAGE only; a deferral is
    # described by `response_message_loading` and `response_message_id` alone.
    if message is not None and kind in (CallbackType.CHANNEL_MESSAGE, CallbackType.UPDATE_MESSAGE):
        result["resource"] = {"type": int(kind), "message": call.message_json(message)}
    return result


# -- the interaction webhook -----------------------------------------------------------------


def _webhook(call: Call) -> Interaction:
    """The interaction behind a webhook URL, if its token still lives."""
    state = call.state
    interaction = state.interactions_by_token.get(call.params["webhook_token"])
    if interaction is None or str(interaction.application_id) != call.params["webhook_id"]:
        raise DiscordError(
            404,
            UNKNOWN_WEBHOOK,
            "Unknown Webhook",
            violation=True,
            detail="no interaction has that token",
        )
    age = state.clock.now() - interaction.created_at
    lifetime = call.discord.config.token_lifetime_s
    if age > lifetime:
        raise DiscordError(
            401,
            INVALID_WEBHOOK_TOKEN,
            "Invalid Webhook Token",
            violation=True,
            detail=f"interaction token used {age / 60:.1f} min after the "
            f"interaction; tokens live {lifetime / 60:g} min",
        )
    if not interaction.acknowledged:
        raise DiscordError(
            404,
            UNKNOWN_WEBHOOK,
            "Unknown Webhook",
            violation=True,
            detail="webhook used before the interaction was acknowledged",
        )
    return interaction


def _owned_message(call: Call, interaction: Interaction) -> Message:
    """`@original` or one of this interaction's followups."""
    raw = call.params.get("message_id", "@original")
    if raw == "@original":
        message_id = interaction.original_message_id
    else:
        message_id = call.snowflake("message_id")
        if message_id not in (interaction.original_message_id, *interaction.followup_ids):
            message_id = None
    message = call.state.messages.get(message_id) if message_id else None
    if message is None or message.deleted:
        raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
    return message


@routes.add("POST", "/webhooks/{webhook_id}/{webhook_token}", auth=False)
async def followup(call: Call) -> web.Response:
    state = call.state
    interaction = _webhook(call)
    body: dict[str, Any] = call.body or {}
    check_limits(body)
    check_not_empty(body, call.files)
    check_files(call.files, interaction.attachment_size_limit, "this interaction")
    original = state.messages.get(interaction.original_message_id or 0)
    if interaction.awaiting_first_followup and original is not None and original.loading:
        # The first followup after a deferral replaces the "thinking..." message.
        interaction.awaiting_first_followup = False
        # Ephemerality was decided by the deferral; other flags come from the followup.
        body = {
            **body,
            "flags": (original.flags & MessageFlag.EPHEMERAL)
            | (requested_flags(body) & ~MessageFlag.EPHEMERAL),
        }
        original.flags = int(body["flags"]) | MessageFlag.LOADING
        edit_fields(call, original, body, fill_deferred=True)
        interaction.followup_ids.append(original.id)
        message = original
    else:
        channel = state.channels[interaction.channel_id]
        flags = requested_flags(body)
        ephemeral = bool(flags & MessageFlag.EPHEMERAL)
        fields = content_fields(body)
        message = state.post_message(
            channel,
            state.bot_user,
            **fields,
            flags=flags,
            attachments=attachments_for(state, channel.id, body, call.files, ephemeral=ephemeral)
            or [],
            webhook_id=state.application_id,
            application_id=state.application_id,
            interaction_metadata=interaction_metadata(
                interaction,
                followup_of=interaction.original_message_id,
                parent=state.interactions.get(interaction.parent_id or 0),
            ),
            interaction_id=interaction.id,
            ephemeral_to=interaction.user.id if ephemeral else None,
            pings=pinged(state, channel, fields["content"], body.get("allowed_mentions"), None),
        )
        interaction.followup_ids.append(message.id)
    if not call.flag("wait"):
        return no_content()
    return json_response(call.message_json(message))


@routes.add("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", auth=False)
@routes.add("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", auth=False)
async def get_webhook_message(call: Call) -> web.Response:
    message = _owned_message(call, _webhook(call))
    return json_response(call.message_json(message))


@routes.add("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", auth=False)
@routes.add("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", auth=False)
async def edit_webhook_message(call: Call) -> web.Response:
    interaction = _webhook(call)
    message = _owned_message(call, interaction)
    body: dict[str, Any] = call.body or {}
    check_limits(body)
    check_files(call.files, interaction.attachment_size_limit, "this interaction")
    if message.loading:
        # Editing the deferred original fills it, like the first followup would.
        interaction.awaiting_first_followup = False
        edit_fields(call, message, body, fill_deferred=True)
    else:
        edit_fields(call, message, body)
    return json_response(call.message_json(message))


@routes.add("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", auth=False)
@routes.add("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", auth=False)
async def delete_webhook_message(call: Call) -> web.Response:
    message = _owned_message(call, _webhook(call))
    call.state.delete_message(message)
    return no_content()
