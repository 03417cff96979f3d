"""What a store training did, and the rule that installs its model."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StoreTrainingReport(BaseModel):
    """The outcome of :func:`index.workflows.training.train_on_store`.

    ``before`` / ``after``: seen-species top-1 on the validation photos, of the model the store
    had (from its stored vectors) and of the new model (None where not measured); ``reason``:
    one line saying why the model was or was not installed, with the figures."""

    installed: bool = Field(description="whether the new model now makes the store's vectors")
    reason: str = Field(description="one line: why it was or was not installed, with figures")
    species: int = Field(description="species trained on")
    photos: int = Field(description="photos the store holds")
    validation_photos: int = Field(description="photos held out (whole specimens) to compare")
    before: float | None = Field(description="current model's seen-species top-1 on them")
    after: float | None = Field(description="new model's seen-species top-1 on them")
    seconds: float = Field(description="wall time of the whole job")
    model_name: str = Field(description="the new model's name")
    fingerprint: str | None = Field(description="the new model's fingerprint, when installed")

    def lines(self) -> list[str]:
        """The report for a person: the figures, the decision and the time."""
        figures = (
            f"{self.photos} photos of {self.species} species; seen-species top-1 on "
            f"{self.validation_photos} held-out photos: current model {percent(self.before)}, "
            f"new model {percent(self.after)}"
        )
        return [figures, self.reason, f"{self.seconds / 60:.1f} minutes"]


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f} %"


def install_decision(before: float, after: float, validation_photos: int) -> tuple[bool, str]:
    """Install when the new model names more validation photos right than the current one
    (``after > before``: at least one photo more, on the same photos); a tie or a loss keeps
    the current model, since a switch re-embeds the store and changes every answer. Returns
    ``(install, the one-line reason)``."""
    gained = round((after - before) * validation_photos)
    figures = f"{percent(after)} vs {percent(before)} on {validation_photos} validation photos"
    if gained > 0:
        return True, f"installed: the new model names {gained} more of them right ({figures})"
    if gained == 0:
        return False, (
            f"not installed: the new model is no better than the current one ({figures}); "
            "the store keeps its model"
        )
    return False, (
        f"not installed: the new model names {-gained} fewer of them right ({figures}); "
        "the store keeps its model"
    )
