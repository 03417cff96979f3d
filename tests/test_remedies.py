"""Index errors say what happened and name a remedy; ``api`` words the command that fixes it,
in the same words the index used to write itself (HTTP answers and the CLI alike)."""

from __future__ import annotations

import pickle

import pytest

from api.remedies import REMEDY_WORDS, user_message
from index.errors import ModelMismatchError, Remedy, StoreError


def test_every_remedy_has_its_words():
    assert set(REMEDY_WORDS) == set(Remedy)


def test_a_store_of_another_model_is_worded_as_before():
    error = ModelMismatchError("aaaa", "bbbb", "MODEL.pt", "/data/store")
    assert error.remedy is Remedy.SAME_MODEL_OR_REINDEX and "shellid" not in str(error)
    assert user_message(error) == (
        "store /data/store was built with model aaaa (MODEL.pt) but the loaded model is bbbb; "
        "open it with the model it was built with (--model / SHELLID_MODEL), or re-embed it "
        "with: shellid reindex --model NEW"
    )


@pytest.mark.parametrize(("uri", "option"), [("/data/store", " --store /data/store"), ("", "")])
def test_a_store_of_the_first_default_is_worded_as_before(uri, option):
    error = ModelMismatchError("aaaa", "bbbb", "efficientnet_lite0/frozen", uri, True)
    where = f"store {uri}" if uri else "the store"
    assert user_message(error) == (
        f"{where} was built with the first release's default backbone "
        "(efficientnet_lite0/frozen), whose weights were fed the wrong padding and "
        "normalisation; re-embed it with the corrected default (much better answers): "
        f"shellid reindex{option} (or keep the old vectors with --model efficientnet_lite0)"
    )


def test_an_error_without_a_remedy_reads_as_its_message():
    assert user_message(StoreError("store x is a file")) == "store x is a file"
    assert user_message(ValueError("bad")) == "bad"


def test_the_remedy_travels_with_a_pickled_error():
    error = StoreError("cannot read store s3://b/x: gone", remedy=Remedy.DOCTOR, store="s3://b/x")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is StoreError and user_message(again) == user_message(error)
    assert user_message(again).endswith("; check it with: shellid doctor --store s3://b/x")
    mismatch = pickle.loads(pickle.dumps(ModelMismatchError("a", "b", uri="u")))
    assert mismatch.model_fingerprint == "b" and mismatch.remedy is Remedy.SAME_MODEL_OR_REINDEX
