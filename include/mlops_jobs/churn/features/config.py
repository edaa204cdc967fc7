"""The feature families and windows (``feature_config.json``), the split names and the keys."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_jobs.hql import validate_identifier

CONFIG_PATH = Path(__file__).parents[1] / "feature_config.json"


EXPECTATIONS_PATH = Path(__file__).parents[1] / "expectations.json"


SPLITS = ("train", "valid", "test")


#: Rows of the run's own ``ds`` for customers of the test split, when the model trains on an
#: earlier day: the model is tested on a later day than it learned from.
OUT_OF_TIME = "oot"


KEYS = ("customer_id", "ds")


class FeatureConfigError(ValueError):
    """The feature configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class FeatureConfig:
    """The feature families and windows, from ``feature_config.json``."""

    windows_days: tuple[int, ...]
    event_types: tuple[str, ...]
    channels: tuple[str, ...]
    channel_window_days: int
    trends: tuple[tuple[int, int], ...]
    numeric: tuple[str, ...]
    boolean: tuple[str, ...]
    categorical: tuple[str, ...]
    amount_event_type: str = "purchase"
    label: str = "churned"
    split: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "valid": 0.15, "test": 0.15}
    )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureConfig:
        try:
            attributes = raw["attributes"]
            config = cls(
                windows_days=tuple(int(w) for w in raw["windows_days"]),
                event_types=tuple(raw["event_types"]),
                channels=tuple(raw["channels"]),
                channel_window_days=int(raw["channel_window_days"]),
                trends=tuple((int(a), int(b)) for a, b in raw.get("trends", [])),
                numeric=tuple(attributes.get("numeric", [])),
                boolean=tuple(attributes.get("boolean", [])),
                categorical=tuple(attributes.get("categorical", [])),
                amount_event_type=raw.get("amount_event_type", "purchase"),
                label=raw.get("label", "churned"),
                split=dict(raw.get("split", {"train": 0.7, "valid": 0.15, "test": 0.15})),
            )
        except KeyError as err:
            raise FeatureConfigError(f"feature config is missing the key {err}") from None
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path | None = None) -> FeatureConfig:
        return cls.from_dict(json.loads(Path(path or CONFIG_PATH).read_text()))

    def validate(self) -> None:
        if not self.windows_days or any(w < 1 for w in self.windows_days):
            raise FeatureConfigError(f"windows_days must be positive, got {self.windows_days}")
        for a, b in self.trends:
            if a not in self.windows_days or b not in self.windows_days or a >= b:
                raise FeatureConfigError(f"trend ({a}, {b}) needs two windows, shorter first")
        if self.channel_window_days not in self.windows_days:
            raise FeatureConfigError(
                f"channel_window_days {self.channel_window_days} is not one of windows_days"
            )
        if self.amount_event_type not in self.event_types:
            raise FeatureConfigError(f"amount_event_type {self.amount_event_type!r} is unknown")
        if set(self.split) != set(SPLITS) or abs(sum(self.split.values()) - 1.0) > 1e-9:
            raise FeatureConfigError(f"split must give {SPLITS} fractions summing to 1")
        for name in (*self.event_types, *self.channels):
            validate_identifier(name, "event type or channel")

    @property
    def max_window(self) -> int:
        return max(self.windows_days)

    def event_feature_names(self) -> list[str]:
        names = ["recency_days"]
        for w in self.windows_days:
            names += [f"events_{w}d", f"active_days_{w}d", f"amount_{w}d"]
            names += [f"{t}_{w}d" for t in self.event_types]
        names += [f"channel_{c}_{self.channel_window_days}d" for c in self.channels]
        names += [f"trend_events_{a}d_{b}d" for a, b in self.trends]
        return names

    def feature_names(self) -> list[str]:
        return [
            *self.event_feature_names(),
            "tenure_days",
            *self.numeric,
            *self.boolean,
            *self.categorical,
        ]
