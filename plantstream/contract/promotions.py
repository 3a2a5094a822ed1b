"""The failure model on Kafka: promotion announcements (``factory.models.promotions``) and the stream's
scores (``factory.models.scores``).

The announcement says which model version now scores.

When the gate moves a registered model's ``champion`` alias (a promotion) or an operator
moves it back (``plantstream model rollback``), one :class:`ModelPromotion` is published,
keyed by the registered model's name, so every announcement of one model lands in one
partition, in order.  The registry stays the source of truth: a consumer (the stream's
inference branch) treats the message as "look now" and loads ``models:/<model>/<version>``
(or resolves ``models:/<model>@champion``); a consumer that missed messages polls the
alias.  ``seq`` counts the model's announcements (1, 2, ...): the registry's alias history
is short, and a consumer can tell an old message from a new one without a clock.

Not a machine event: it has no site/area/line/machine identity, so it is not one of the
:data:`plantstream.contract.events.EVENT_TYPES`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

from plantstream.contract.events import Millis, Name

PROMOTION_SCHEMA_VERSION = 1


class PromotionAction(StrEnum):
    PROMOTE = "promote"  # the gate let a candidate replace the champion (or there was none)
    ROLLBACK = "rollback"  # an operator moved the alias back to an earlier version


class ModelPromotion(msgspec.Struct, kw_only=True, frozen=True):
    """The ``champion`` alias of ``model`` moved to ``version`` (``factory.models.promotions``)."""

    v: Annotated[int, msgspec.Meta(ge=1, le=PROMOTION_SCHEMA_VERSION)] = PROMOTION_SCHEMA_VERSION
    model: Name  # the registered model
    alias: Name = "champion"
    version: Name  # the model version the alias points to now
    previous_version: Name | None = None  # where it pointed before (None: first champion)
    action: PromotionAction
    model_uri: Annotated[str, msgspec.Meta(max_length=512)]  # models:/<model>/<version>
    run_id: Annotated[str, msgspec.Meta(max_length=64)] = ""  # the MLflow run that trained it
    threshold: float  # alert when the failure probability is >= threshold
    horizon_min: Annotated[int, msgspec.Meta(ge=1)]  # the probability is of failing within this
    seq: Annotated[int, msgspec.Meta(ge=1)]  # per model, +1 per announcement
    ts: Millis  # when the alias moved (epoch ms UTC)
    reason: Annotated[str, msgspec.Meta(max_length=2048)] = ""
    metrics: dict[str, float] = {}  # the held-out figures the decision was made on


class FailureScore(msgspec.Struct, kw_only=True, frozen=True):
    """One scoring of one machine by the stream's inference branch (``factory.models.scores``).

    Keyed by ``machine_id``.  ``ts`` is the sample time (epoch-aligned, every
    ``PLANTSTREAM_MODELS__SAMPLE_EVERY_MIN`` minutes while the machine runs): the features are
    those of the closed minutes before it, the same rows ``gold/failure_features`` holds for
    that machine and time.  Each (machine, ts) is scored once by whichever champion was loaded
    when its minutes closed, and says which (``model_version``); a replay after a crash may
    publish a sample again (at-least-once), so readers keep one per (machine_id, ts).
    """

    v: Annotated[int, msgspec.Meta(ge=1, le=PROMOTION_SCHEMA_VERSION)] = PROMOTION_SCHEMA_VERSION
    site: Name
    area: Name
    line: Name
    machine_id: Name
    ts: Millis  # the sample time
    probability: Annotated[float, msgspec.Meta(ge=0, le=1)]  # of failing within horizon_min
    threshold: float
    alert: bool  # probability >= threshold
    horizon_min: Annotated[int, msgspec.Meta(ge=1)]
    model: Name  # the registered model
    model_version: Name
    read_ts: Millis  # wall clock when the stream scored it


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(ModelPromotion)
_SCORE_DECODER = msgspec.json.Decoder(FailureScore)


def encode_score(score: FailureScore) -> bytes:
    return _ENCODER.encode(score)


def decode_score(data: bytes) -> FailureScore:
    return _SCORE_DECODER.decode(data)


def encode_promotion(promotion: ModelPromotion) -> bytes:
    return _ENCODER.encode(promotion)


def decode_promotion(data: bytes) -> ModelPromotion:
    """Raises ``msgspec.ValidationError`` / ``DecodeError`` for a message that is no announcement."""
    return _DECODER.decode(data)


__all__ = [
    "PROMOTION_SCHEMA_VERSION",
    "FailureScore",
    "ModelPromotion",
    "PromotionAction",
    "decode_promotion",
    "decode_score",
    "encode_promotion",
    "encode_score",
]
