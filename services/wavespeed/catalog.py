"""The one table of FLUX.1 Kontext models, and a typed request model per endpoint.

Paths are irregular (`dev/multi` with a slash, `dev-ultra-fast` with a hyphen), so every path is
written out once here and never built from parts. The seeds in the project brief are
authoritative; rows marked "docs" come from WaveSpeed's public model pages.

The request models are the wire format: the client serialises them and the simulator validates
incoming JSON with the very same classes, so the two cannot drift apart. Image fields hold either
a URL string (what goes over the wire) or an `InputImage` (bytes the client still has to send).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
)

from .errors import InvalidInputError
from .media import InputImage

AspectRatio = Literal["21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"]
ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
OutputFormat = Literal["jpeg", "png", "webp"]
MODEL_OWNER = "wavespeed-ai"


def _tolerance_as_string(value: Any) -> Any:
    # The API wants "1".."5" as strings; members and config files naturally write numbers.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


SafetyTolerance = Annotated[Literal["1", "2", "3", "4", "5"], BeforeValidator(_tolerance_as_string)]


def _arbitrary_image(value: Any) -> Any:
    if isinstance(value, InputImage | str):
        return value
    raise ValueError("must be an image URL")


# An image reference: a URL / data URI on the wire, or bytes not sent yet. JSON can only carry
# strings, so a request arriving over HTTP (the simulator) always holds strings.
MediaRef = Annotated[
    InputImage | str,
    BeforeValidator(_arbitrary_image),
    PlainSerializer(lambda v: v if isinstance(v, str) else v.describe(), return_type=str),
]


class KontextRequest(BaseModel):
    """Fields every Kontext endpoint shares."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    # Models whose docs list `enable_sync_mode` override this.
    SUPPORTS_SYNC: ClassVar[bool] = False

    prompt: str = Field(min_length=1)
    seed: int | None = Field(default=None, ge=-1, le=2147483647)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        # None only gets this far on the dev models, whose page marks the prompt optional.
        if value is not None and not value.strip():
            raise ValueError("blank prompt")
        return value

    def media(self) -> list[MediaRef]:
        """Every image reference in this request, in order."""
        refs: list[MediaRef] = []
        image = getattr(self, "image", None)
        if image is not None:
            refs.append(image)
        refs.extend(getattr(self, "images", None) or [])
        return refs

    def with_media(self, refs: list[str]) -> KontextRequest:
        """A copy with the image references replaced, in the order `media()` gives them."""
        update: dict[str, Any] = {}
        remaining = list(refs)
        if getattr(self, "image", None) is not None:
            update["image"] = remaining.pop(0)
        if getattr(self, "images", None):
            update["images"] = remaining
        return self.model_copy(update=update)

    def output_count(self) -> int:
        return getattr(self, "num_images", None) or 1

    def wire_json(self) -> dict[str, Any]:
        """The JSON body to POST. Unset options are left out so WaveSpeed applies its defaults."""
        return self.model_dump(mode="json", exclude_none=True)


class _SyncCapable(KontextRequest):
    SUPPORTS_SYNC: ClassVar[bool] = True
    enable_sync_mode: bool | None = None


# --- Pro ---------------------------------------------------------------------------------------


class ProEditRequest(_SyncCapable):
    """flux-kontext-pro: its seed page lists neither aspect_ratio nor sync mode; the newer page
    lists `enable_sync_mode`. Sync is asked for; if WaveSpeed ignores it, the answer is the
    accepted job (status created/processing) and the client polls, so both readings work."""

    image: MediaRef
    seed: int | None = Field(default=None, ge=-1, le=9999999999)
    guidance_scale: float | None = Field(default=None, ge=1.0, le=10.0)
    safety_tolerance: SafetyTolerance | None = None


class ProMultiRequest(_SyncCapable):
    images: list[MediaRef] = Field(min_length=1, max_length=5)
    guidance_scale: float | None = Field(default=None, ge=1.0, le=20.0)
    aspect_ratio: AspectRatio | None = None


class ProTextToImageRequest(_SyncCapable):
    # The seed's parameter table has no num_images, but its pricing line does
    # ("num_images x $0.04"); accepting it is harmless, so both readings work.
    aspect_ratio: AspectRatio | None = None
    num_images: int | None = Field(default=None, ge=1, le=4)
    guidance_scale: float | None = Field(default=None, ge=1.0, le=20.0)
    safety_tolerance: SafetyTolerance | None = None


# --- Max ---------------------------------------------------------------------------------------


class MaxEditRequest(KontextRequest):
    image: MediaRef
    guidance_scale: float | None = Field(default=None, ge=1.0, le=10.0)
    aspect_ratio: AspectRatio | None = None
    safety_tolerance: SafetyTolerance | None = None


class MaxMultiRequest(KontextRequest):
    images: list[MediaRef] = Field(min_length=1, max_length=5)
    guidance_scale: float | None = Field(default=None, ge=1.0, le=20.0)
    aspect_ratio: AspectRatio | None = None


class MaxTextToImageRequest(KontextRequest):
    aspect_ratio: AspectRatio | None = None
    num_images: int | None = Field(default=None, ge=1, le=4)
    guidance_scale: float | None = Field(default=None, ge=1.0, le=10.0)
    safety_tolerance: SafetyTolerance | None = None


# --- Dev ---------------------------------------------------------------------------------------

_SIZE = re.compile(r"^(\d{3,4})\*(\d{3,4})$")
SIZE_MIN, SIZE_MAX = 256, 1536


class _DevBase(_SyncCapable):
    size: str | None = None
    num_inference_steps: int | None = Field(default=None, ge=1, le=50)
    guidance_scale: float | None = Field(default=None, ge=1.0, le=20.0)
    num_images: int | None = Field(default=None, ge=1, le=4)
    output_format: OutputFormat | None = None
    enable_base64_output: bool | None = None

    @field_validator("size")
    @classmethod
    def _size_in_range(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = _SIZE.match(value.strip().replace("x", "*").replace("X", "*"))
        if not match or not all(SIZE_MIN <= int(side) <= SIZE_MAX for side in match.groups()):
            raise ValueError("size")
        return f"{match.group(1)}*{match.group(2)}"


class DevEditRequest(_DevBase):
    # The dev page marks both prompt and image optional; the bot always sends both.
    prompt: str | None = None  # type: ignore[assignment]
    image: MediaRef | None = None


class DevUltraFastRequest(DevEditRequest):
    guidance_scale: float | None = Field(default=None, ge=0.0, le=20.0)


class DevMultiRequest(_DevBase):
    images: list[MediaRef] = Field(min_length=1, max_length=4)


class DevMultiUltraFastRequest(DevMultiRequest):
    guidance_scale: float | None = Field(default=None, ge=0.0, le=20.0)


class LoraWeight(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    scale: float = Field(default=1.0, ge=0.0, le=4.0)


class DevLoraRequest(DevEditRequest):
    loras: list[LoraWeight] | None = Field(default=None, max_length=3)


# --- The table ---------------------------------------------------------------------------------


class ModelKind(enum.StrEnum):
    EDIT = "edit"
    MULTI = "multi"
    TEXT_TO_IMAGE = "text-to-image"


class Family(enum.StrEnum):
    PRO = "pro"
    MAX = "max"
    DEV = "dev"
    DEV_ULTRA_FAST = "dev-ultra-fast"
    DEV_LORA = "dev-lora"

    @property
    def display_name(self) -> str:
        return FAMILY_NAMES[self]


FAMILY_NAMES = {
    Family.PRO: "Kontext Pro",
    Family.MAX: "Kontext Max",
    Family.DEV: "Kontext Dev",
    Family.DEV_ULTRA_FAST: "Kontext Dev ultra-fast",
    Family.DEV_LORA: "Kontext Dev LoRA",
}
# What a command uses when the member names no model.
DEFAULT_FAMILY = Family.PRO
# The families members choose from: LoRA needs a list of LoRAs, which no command takes.
COMMAND_FAMILIES = (Family.PRO, Family.MAX, Family.DEV, Family.DEV_ULTRA_FAST)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    path: str
    name: str
    family: Family
    kind: ModelKind
    request: type[KontextRequest]
    # US dollars; None where WaveSpeed publishes no price.
    price: Decimal | None
    # True when the price is per output image (x num_images), False when per request.
    per_image: bool
    source: Literal["seed", "docs"]

    @property
    def model_id(self) -> str:
        return f"{MODEL_OWNER}/{self.path}"

    @property
    def supports_sync(self) -> bool:
        return self.request.SUPPORTS_SYNC

    @property
    def max_input_images(self) -> int:
        if self.kind == ModelKind.MULTI:
            return _max_len(self.request, "images")
        return 1 if self.kind == ModelKind.EDIT else 0


def _max_len(request: type[KontextRequest], field: str) -> int:
    for meta in request.model_fields[field].metadata:
        if hasattr(meta, "max_length"):
            return int(meta.max_length)
    raise LookupError(field)


_D = Decimal
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "flux-kontext-pro",
        "Kontext Pro",
        Family.PRO,
        ModelKind.EDIT,
        ProEditRequest,
        _D("0.04"),
        False,
        "seed",
    ),
    ModelSpec(
        "flux-kontext-pro/multi",
        "Kontext Pro Multi",
        Family.PRO,
        ModelKind.MULTI,
        ProMultiRequest,
        _D("0.04"),
        False,
        "seed",
    ),
    ModelSpec(
        "flux-kontext-pro/text-to-image",
        "Kontext Pro Text-to-Image",
        Family.PRO,
        ModelKind.TEXT_TO_IMAGE,
        ProTextToImageRequest,
        _D("0.04"),
        True,
        "seed",
    ),
    ModelSpec(
        "flux-kontext-max",
        "Kontext Max",
        Family.MAX,
        ModelKind.EDIT,
        MaxEditRequest,
        _D("0.08"),
        False,
        "docs",
    ),
    ModelSpec(
        "flux-kontext-max/multi",
        "Kontext Max Multi",
        Family.MAX,
        ModelKind.MULTI,
        MaxMultiRequest,
        _D("0.08"),
        True,
        "docs",
    ),
    ModelSpec(
        "flux-kontext-max/text-to-image",
        "Kontext Max Text-to-Image",
        Family.MAX,
        ModelKind.TEXT_TO_IMAGE,
        MaxTextToImageRequest,
        _D("0.08"),
        True,
        "seed",
    ),
    ModelSpec(
        "flux-kontext-dev",
        "Kontext Dev",
        Family.DEV,
        ModelKind.EDIT,
        DevEditRequest,
        _D("0.025"),
        True,
        "seed",
    ),
    ModelSpec(
        "flux-kontext-dev/multi",
        "Kontext Dev Multi",
        Family.DEV,
        ModelKind.MULTI,
        DevMultiRequest,
        _D("0.03"),
        False,
        "docs",
    ),
    ModelSpec(
        "flux-kontext-dev-ultra-fast",
        "Kontext Dev Ultra-Fast",
        Family.DEV_ULTRA_FAST,
        ModelKind.EDIT,
        DevUltraFastRequest,
        _D("0.02"),
        True,
        "docs",
    ),
    ModelSpec(
        "flux-kontext-dev/multi-ultra-fast",
        "Kontext Dev Multi Ultra-Fast",
        Family.DEV_ULTRA_FAST,
        ModelKind.MULTI,
        DevMultiUltraFastRequest,
        _D("0.025"),
        False,
        "docs",
    ),
    ModelSpec(
        "flux-kontext-dev-lora",
        "Kontext Dev LoRA",
        Family.DEV_LORA,
        ModelKind.EDIT,
        DevLoraRequest,
        None,
        True,
        "docs",
    ),
)

MODELS_BY_PATH: dict[str, ModelSpec] = {spec.path: spec for spec in MODELS}
_BY_TASK: dict[tuple[Family, ModelKind], ModelSpec] = {
    (spec.family, spec.kind): spec for spec in MODELS
}


def model_for_path(path: str) -> ModelSpec:
    """The model at `path` (with or without the `wavespeed-ai/` owner)."""
    spec = MODELS_BY_PATH.get(path.removeprefix(f"{MODEL_OWNER}/"))
    if spec is None:
        raise InvalidInputError(f"There is no Kontext model called '{path}'.", field="model")
    return spec


def pick_model(family: Family | str, kind: ModelKind | str) -> ModelSpec:
    """The model of `family` that does `kind` of work, e.g. (max, multi) -> Kontext Max Multi."""
    spec = _BY_TASK.get((Family(family), ModelKind(kind)))
    if spec is None:
        offered = sorted(str(s.family) for s in MODELS if s.kind == ModelKind(kind))
        raise InvalidInputError(
            f"{_KIND_WORDS[ModelKind(kind)].capitalize()} is not offered by Kontext "
            f"{Family(family).value.title()}; choose one of: {', '.join(offered)}.",
            field="model",
        )
    return spec


def families_offering(kind: ModelKind) -> list[Family]:
    """The command families with a model for `kind` of work, in COMMAND_FAMILIES order."""
    return [family for family in COMMAND_FAMILIES if (family, kind) in _BY_TASK]


_KIND_WORDS = {
    ModelKind.EDIT: "editing one image",
    ModelKind.MULTI: "combining several images",
    ModelKind.TEXT_TO_IMAGE: "making an image from text",
}


# --- Validation with messages a Discord member can read ----------------------------------------

FIELD_LABELS = {
    "prompt": "prompt",
    "image": "image",
    "images": "images",
    "seed": "seed",
    "guidance_scale": "guidance",
    "safety_tolerance": "safety tolerance",
    "aspect_ratio": "aspect ratio",
    "num_images": "number of images",
    "num_inference_steps": "steps",
    "size": "size",
    "output_format": "output format",
    "enable_sync_mode": "sync mode",
    "enable_base64_output": "base64 output",
    "loras": "LoRAs",
}


CHOICES: dict[str, tuple[str, ...]] = {
    "aspect_ratio": ASPECT_RATIOS,
    "output_format": get_args(OutputFormat),
    "safety_tolerance": ("1", "2", "3", "4", "5"),
}


def label(field: str) -> str:
    return FIELD_LABELS.get(field, field.replace("_", " "))


def _number(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


def _bounds(request: type[BaseModel], field: str) -> tuple[Any, Any]:
    low = high = None
    info = request.model_fields.get(field)
    for meta in info.metadata if info else ():
        low = getattr(meta, "ge", low)
        high = getattr(meta, "le", high)
    return low, high


def explain(error: Mapping[str, Any], spec: ModelSpec) -> tuple[str, str]:
    """One pydantic error as (field, sentence for a member)."""
    loc = [part for part in error["loc"] if isinstance(part, str)]
    field = loc[0] if loc else "request"
    what = label(field)
    kind = error["type"]
    name = spec.name
    if kind == "extra_forbidden":
        return field, f"{name} does not take the option '{what}'."
    if kind == "missing":
        return field, f"{name} needs {'an' if what[0] in 'aeiou' else 'a'} {what}."
    if field == "loras" and len(loc) > 1:
        low, high = _bounds(LoraWeight, loc[-1])
        if low is not None:
            return field, (
                f"each LoRA {loc[-1]} must be between {_number(low)} and "
                f"{_number(high)} for {name}."
            )
        return field, f"each LoRA needs a {loc[-1]} for {name}."
    if kind in {"too_short", "too_long"} and field in {"images", "loras"}:
        info = spec.request.model_fields[field]
        low = next((m.min_length for m in info.metadata if hasattr(m, "min_length")), 0)
        high = next((m.max_length for m in info.metadata if hasattr(m, "max_length")), None)
        if field == "loras":
            return field, f"{name} takes at most {high} LoRAs."
        return field, f"{name} takes between {low} and {high} images."
    if field == "prompt":
        return field, f"{name} needs a prompt: describe what you want."
    if field == "size":
        return field, (
            f"size must look like 1024*768, each side between {SIZE_MIN} and "
            f"{SIZE_MAX}, for {name}."
        )
    if kind == "literal_error" and field in CHOICES:
        return field, f"{what} must be one of {', '.join(CHOICES[field])} for {name}."
    low, high = _bounds(spec.request, field)
    if low is not None and high is not None:
        return field, f"{what} must be between {_number(low)} and {_number(high)} for {name}."
    if kind.startswith(("int_", "float_", "bool_", "string_")):
        return field, f"{what} has the wrong type for {name}."
    return field, f"{what} is not valid for {name}."


def validate_request(spec: ModelSpec, params: dict[str, Any]) -> KontextRequest:
    """Build the request for `spec` from `params`, or raise InvalidInputError in plain words.

    Options left as None are dropped first, so callers can pass every option they have.
    """
    data = {key: value for key, value in params.items() if value is not None}
    try:
        return spec.request.model_validate(data)
    except ValidationError as exc:
        field, message = explain(exc.errors()[0], spec)
        raise InvalidInputError(message, field=field) from None


def estimate_cost(spec: ModelSpec, request: KontextRequest) -> Decimal | None:
    """What WaveSpeed will charge for `request`, in US dollars; None where no price is known."""
    return price_for(spec, request.output_count())


def price_for(spec: ModelSpec, images: int) -> Decimal | None:
    """What WaveSpeed charges for a job of `spec` making `images` images; None where no price
    is known. Per-image models charge each image, the others the request."""
    if spec.price is None:
        return None
    return spec.price * (images if spec.per_image else 1)
