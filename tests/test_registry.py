"""The one registry type behind every extension point."""

import pytest

from embedder.registry import Registry, UnknownNameError


def test_registered_entries_are_found_in_order() -> None:
    losses: Registry[int] = Registry("loss")
    losses.add("multi_similarity", 1)

    @losses.register("supcon")
    def supcon() -> int:
        return 2

    assert losses.names() == ["multi_similarity", "supcon"]
    assert losses["supcon"] is supcon and "supcon" in losses and len(losses) == 2


def test_unknown_name_suggests_the_closest_and_lists_all() -> None:
    losses: Registry[int] = Registry("loss", plural="losses")
    losses.add("multi_similarity", 1)
    losses.add("proxy_anchor", 2)
    with pytest.raises(UnknownNameError) as caught:
        losses["multisimilarity"]
    assert str(caught.value) == (
        "unknown loss 'multisimilarity' (did you mean 'multi_similarity'?); "
        "losses: multi_similarity, proxy_anchor"
    )


def test_a_name_registers_once() -> None:
    heads: Registry[str] = Registry("head")
    heads.add("mlp", "a")
    with pytest.raises(ValueError, match="already registered"):
        heads.add("mlp", "b")


def test_a_removed_name_is_unknown_again_and_the_rest_keep_their_order() -> None:
    heads: Registry[str] = Registry("head")
    for name in ("identity", "toy", "mlp"):
        heads.add(name, name.upper())
    assert heads.remove("toy") == "TOY"
    assert heads.names() == ["identity", "mlp"] and heads.values() == ["IDENTITY", "MLP"]
    with pytest.raises(UnknownNameError, match="unknown head 'toy'"):
        heads.remove("toy")


def test_closest_names_a_near_miss_only() -> None:
    scorers: Registry[int] = Registry("species scorer")
    scorers.add("whitened", 1)
    assert scorers.closest("whitend") == "whitened" and scorers.closest("zzz") is None
