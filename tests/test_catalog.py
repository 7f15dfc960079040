"""Request validation: property tests over the model table, and the words members read."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.wavespeed import (
    MODELS,
    Family,
    InputImage,
    InvalidInputError,
    ModelKind,
    ModelSpec,
    estimate_cost,
    model_for_path,
    pick_model,
    validate_request,
)
from services.wavespeed.catalog import ASPECT_RATIOS, FIELD_LABELS, _bounds, _number, label
from tests.images import make_png

IMAGE = InputImage(make_png())
URL = "https://example.invalid/input.png"
NUMERIC = ("seed", "guidance_scale", "num_images", "num_inference_steps")
FIELD_NAMES = sorted(FIELD_LABELS)


def base_params(spec: ModelSpec, image: Any = IMAGE) -> dict[str, Any]:
    params: dict[str, Any] = {"prompt": "make it a watercolor"}
    if spec.kind == ModelKind.EDIT:
        params["image"] = image
    elif spec.kind == ModelKind.MULTI:
        params["images"] = [image, image]
    return params


def numeric_fields(spec: ModelSpec) -> list[str]:
    return [name for name in NUMERIC if name in spec.request.model_fields]


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[ModelSpec, dict[str, Any]]:
    spec = draw(st.sampled_from(MODELS))
    params = base_params(spec, image=URL)
    fields = spec.request.model_fields
    for name in numeric_fields(spec):
        low, high = _bounds(spec.request, name)
        if draw(st.booleans()):
            if fields[name].annotation in (int, int | None):
                params[name] = draw(st.integers(int(low), int(high)))
            else:
                params[name] = draw(st.floats(low, high, allow_nan=False))
    if "aspect_ratio" in fields and draw(st.booleans()):
        params["aspect_ratio"] = draw(st.sampled_from(ASPECT_RATIOS))
    if "safety_tolerance" in fields and draw(st.booleans()):
        params["safety_tolerance"] = draw(st.sampled_from(["1", "2", "3", "4", "5", 1, 5]))
    if "size" in fields and draw(st.booleans()):
        width, height = draw(st.tuples(st.integers(256, 1536), st.integers(256, 1536)))
        params["size"] = f"{width}*{height}"
    if "output_format" in fields and draw(st.booleans()):
        params["output_format"] = draw(st.sampled_from(["jpeg", "png", "webp"]))
    return spec, params


@settings(max_examples=300, deadline=None)
@given(valid_requests())
def test_valid_requests_survive_the_wire(case: tuple[ModelSpec, dict[str, Any]]) -> None:
    spec, params = case
    request = validate_request(spec, params)
    body = request.wire_json()

    # What the client sends is exactly what the simulator's validation accepts.
    assert spec.request.model_validate(body) == request
    assert all(value is not None for value in body.values())
    if "safety_tolerance" in body:
        assert isinstance(body["safety_tolerance"], str)


@st.composite
def out_of_range(draw: st.DrawFn) -> tuple[ModelSpec, str, float]:
    spec = draw(st.sampled_from(MODELS))
    name = draw(st.sampled_from(numeric_fields(spec)))
    low, high = _bounds(spec.request, name)
    value = draw(
        st.one_of(
            st.integers(int(high) + 1, int(high) + 10**6),
            st.integers(int(low) - 10**6, int(low) - 1),
        )
    )
    return spec, name, value


@settings(max_examples=300, deadline=None)
@given(out_of_range())
def test_out_of_range_values_get_a_readable_sentence(case: tuple[ModelSpec, str, float]) -> None:
    spec, name, value = case
    low, high = _bounds(spec.request, name)

    with pytest.raises(InvalidInputError) as caught:
        validate_request(spec, {**base_params(spec), name: value})

    message = caught.value.user_message
    assert message == (
        f"{label(name)} must be between {_number(low)} and {_number(high)} for {spec.name}."
    )
    assert caught.value.field == name
    assert "Input should" not in message  # no raw pydantic wording


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(MODELS), st.text(min_size=1, max_size=20).filter(str.isidentifier))
def test_unknown_options_are_refused_not_dropped(spec: ModelSpec, option: str) -> None:
    if option in spec.request.model_fields:
        return
    with pytest.raises(InvalidInputError) as caught:
        validate_request(spec, {**base_params(spec), option: 1})
    assert caught.value.user_message == f"{spec.name} does not take the option '{label(option)}'."


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        (
            "flux-kontext-pro",
            {"guidance_scale": 10.5},
            "guidance must be between 1 and 10 for Kontext Pro.",
        ),
        (
            "flux-kontext-pro/multi",
            {"guidance_scale": 20.5},
            "guidance must be between 1 and 20 for Kontext Pro Multi.",
        ),
        (
            "flux-kontext-pro",
            {"seed": 10_000_000_000},
            "seed must be between -1 and 9999999999 for Kontext Pro.",
        ),
        (
            "flux-kontext-max",
            {"seed": 2_147_483_648},
            "seed must be between -1 and 2147483647 for Kontext Max.",
        ),
        (
            "flux-kontext-pro",
            {"aspect_ratio": "16:9"},
            "Kontext Pro does not take the option 'aspect ratio'.",
        ),
        (
            "flux-kontext-max",
            {"aspect_ratio": "5:4"},
            "aspect ratio must be one of 21:9, 16:9, 4:3, 3:2, 1:1, 2:3, 3:4, 9:16, 9:21 "
            "for Kontext Max.",
        ),
        (
            "flux-kontext-pro",
            {"safety_tolerance": "9"},
            "safety tolerance must be one of 1, 2, 3, 4, 5 for Kontext Pro.",
        ),
        (
            "flux-kontext-dev",
            {"num_inference_steps": 0},
            "steps must be between 1 and 50 for Kontext Dev.",
        ),
        (
            "flux-kontext-dev",
            {"size": "2048*512"},
            "size must look like 1024*768, each side between 256 and 1536, for Kontext Dev.",
        ),
        (
            "flux-kontext-dev",
            {"output_format": "gif"},
            "output format must be one of jpeg, png, webp for Kontext Dev.",
        ),
        (
            "flux-kontext-pro",
            {"num_inference_steps": 20},
            "Kontext Pro does not take the option 'steps'.",
        ),
        (
            "flux-kontext-pro",
            {"prompt": "   "},
            "Kontext Pro needs a prompt: describe what you want.",
        ),
        (
            "flux-kontext-pro/multi",
            {"images": [IMAGE] * 6},
            "Kontext Pro Multi takes between 1 and 5 images.",
        ),
        (
            "flux-kontext-dev/multi",
            {"images": [IMAGE] * 5},
            "Kontext Dev Multi takes between 1 and 4 images.",
        ),
        (
            "flux-kontext-dev-lora",
            {"loras": [{"path": "a", "scale": 5}]},
            "each LoRA scale must be between 0 and 4 for Kontext Dev LoRA.",
        ),
        (
            "flux-kontext-dev-lora",
            {"loras": [{"path": "a"}] * 4},
            "Kontext Dev LoRA takes at most 3 LoRAs.",
        ),
    ],
)
def test_messages_a_member_reads(path: str, params: dict[str, Any], message: str) -> None:
    spec = model_for_path(path)
    with pytest.raises(InvalidInputError) as caught:
        validate_request(spec, {**base_params(spec), **params})
    assert caught.value.user_message == message


def test_a_missing_image_is_named() -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_request(model_for_path("flux-kontext-pro"), {"prompt": "hat"})
    assert caught.value.user_message == "Kontext Pro needs an image."


def test_dev_size_accepts_the_x_spelling() -> None:
    request = validate_request(
        model_for_path("flux-kontext-dev"),
        {**base_params(model_for_path("flux-kontext-dev")), "size": "1024x768"},
    )
    assert request.wire_json()["size"] == "1024*768"


def test_one_table_every_path_once() -> None:
    paths = [spec.path for spec in MODELS]
    assert len(paths) == len(set(paths)) == 11
    assert model_for_path("wavespeed-ai/flux-kontext-dev/multi-ultra-fast").name == (
        "Kontext Dev Multi Ultra-Fast"
    )


@pytest.mark.parametrize(
    ("family", "kind", "path"),
    [
        (Family.PRO, ModelKind.EDIT, "flux-kontext-pro"),
        (Family.MAX, ModelKind.MULTI, "flux-kontext-max/multi"),
        (Family.MAX, ModelKind.TEXT_TO_IMAGE, "flux-kontext-max/text-to-image"),
        (Family.DEV_ULTRA_FAST, ModelKind.MULTI, "flux-kontext-dev/multi-ultra-fast"),
    ],
)
def test_pick_model(family: Family, kind: ModelKind, path: str) -> None:
    assert pick_model(family, kind).path == path


def test_pick_model_refuses_what_a_family_does_not_offer() -> None:
    with pytest.raises(InvalidInputError) as caught:
        pick_model(Family.DEV, ModelKind.TEXT_TO_IMAGE)
    assert "Making an image from text is not offered by Kontext Dev" in caught.value.user_message


@pytest.mark.parametrize(
    ("path", "params", "cost"),
    [
        ("flux-kontext-pro", {}, Decimal("0.04")),
        ("flux-kontext-pro/text-to-image", {"num_images": 4}, Decimal("0.16")),
        ("flux-kontext-max/text-to-image", {"num_images": 3}, Decimal("0.24")),
        ("flux-kontext-dev", {"num_images": 2}, Decimal("0.050")),
        ("flux-kontext-dev/multi", {"num_images": 2}, Decimal("0.03")),
        ("flux-kontext-dev-lora", {}, None),
    ],
)
def test_cost_estimate(path: str, params: dict[str, Any], cost: Decimal | None) -> None:
    spec = model_for_path(path)
    assert estimate_cost(spec, validate_request(spec, {**base_params(spec), **params})) == cost


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.lists(st.one_of(st.text(max_size=10), st.integers()), max_size=6),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(MODELS),
    st.dictionaries(st.sampled_from([*FIELD_NAMES, "steps", "colour"]), ANY_VALUE, max_size=8),
)
def test_any_input_is_accepted_or_refused_in_words(spec: ModelSpec, params: dict[str, Any]) -> None:
    """Whatever arrives (a member's options, a JSON body), the answer is a request or a sentence."""
    try:
        request = validate_request(spec, params)
    except InvalidInputError as exc:
        assert exc.user_message.endswith(".")
        assert "Input should" not in exc.user_message
    else:
        assert spec.request.model_validate(request.wire_json()) == request
