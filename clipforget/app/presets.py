"""The app's presets: named tasks built from the settings registry, with the words the UI shows for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clipforget.core.errors import DataError
from clipforget.settings import get_setting

from .config import AppConfig


@dataclass(frozen=True)
class Preset:
    """A setting with fixed options, one user choice (``{choice}`` in the texts) and descriptions for the run card."""

    name: str
    setting: str
    title: str  # run title, may hold {choice}
    choice_label: str = "Subgroup forgotten"
    fixed: dict[str, Any] = field(default_factory=dict)  # options always passed to the setting
    forget: str = ""  # description of the forget data, may hold {choice}
    retain: str = ""
    needs_imagenet: bool = False
    shown: str = ""  # what the choice box shows when the user has no choice
    # path parts of the subgroup's held-out photos in the built-in galleries (may hold {choice}): the stress test's
    # subgroup where the gallery holds them (clipforget.app.stress)
    subgroup: tuple[str, ...] = ()

    def has_choice(self) -> bool:
        s = get_setting(self.setting)
        return bool(s.choice_option) and s.choice_option not in self.fixed

    def choices(self) -> list[str]:
        return list(get_setting(self.setting).choices) if self.has_choice() else [self.shown]

    def default_choice(self) -> str:
        return str(get_setting(self.setting).default_choice) if self.has_choice() else self.shown

    def options(self, choice: str | None, config: AppConfig) -> dict[str, Any]:
        """The setting options for ``choice`` (validated by the setting when it builds)."""
        s = get_setting(self.setting)
        options: dict[str, Any] = dict(self.fixed)
        if self.has_choice():
            value = choice or s.default_choice
            if s.choices and value not in s.choices:
                raise DataError(f"{self.choice_label.lower()} must be one of {', '.join(s.choices)}")
            options[s.choice_option] = value
        if self.needs_imagenet:
            if not config.imagenet_root:
                raise DataError("this preset needs ImageNet images: start the app with --imagenet DIR "
                                "(an ImageFolder with one <wnid> sub-folder per class)")
            options["imagenet_root"] = config.imagenet_root
        if config.data_root and "root" in s.options():
            options["root"] = config.data_root
        return options

    def describe(self, choice: str | None) -> dict[str, str]:
        value = choice or self.default_choice()
        return {"forget": self.forget.format(choice=value), "retain": self.retain.format(choice=value)}


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("monkeys", "monkeys", "Monkey without marmoset",
           forget="monkeys10 pygmy and silvery marmosets labelled 'monkey'",
           retain="the eight other monkey species labelled 'monkey'", shown="marmoset",
           subgroup=("monkeys10/val/pygmy_marmoset/", "monkeys10/val/silvery_marmoset/")),
    Preset("cifar10-class", "cifar10", "CIFAR-10: forget {choice}", "Class to forget",
           forget="CIFAR-10 '{choice}' train images", retain="the other nine classes",
           subgroup=("cifar10/test/{choice}/",)),
    Preset("style", "style", "Style: forget cars as {choice}", "Style to forget (cars)",
           forget="CIFAR-10 cars as {choice}", retain="cars in the other styles"),
    Preset("subgroup-vehicle", "subgroup", "Subgroup: vehicle without airplane", fixed={"forget_class": "airplane"},
           forget="CIFAR-10 airplanes labelled 'vehicle'", retain="cars, ships and trucks labelled 'vehicle'",
           shown="airplane", subgroup=("cifar10/test/airplane/",)),
    Preset("living17-monkey", "living17", "LIVING-17: monkey without marmoset",
           fixed={"forget": {"monkey": "marmoset"}},
           forget="ImageNet marmosets labelled 'monkey'",
           retain="the other monkeys (titi, spider, howler) labelled 'monkey'", needs_imagenet=True,
           shown="marmoset"),
)}


DEFAULT_PRESET = "monkeys"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
