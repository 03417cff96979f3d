"""HTTP lives in api/: every index error class has its status and code there, by class."""

from __future__ import annotations

import inspect

import pytest

from api.errors import INDEX_ERRORS, index_error_answer
from index import errors as index_errors
from index.errors import CollectionError, SpeciesNotFoundError, StoreError

INDEX_ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(index_errors, inspect.isclass)
    if issubclass(cls, CollectionError) and cls.__module__ == index_errors.__name__
]


@pytest.mark.parametrize("cls", INDEX_ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_index_error_class_has_its_own_http_answer(cls):
    assert cls in INDEX_ERRORS
    assert not hasattr(cls, "http_status")  # the index knows no HTTP


def test_statuses_say_what_kind_of_problem_it_is():
    assert index_error_answer(SpeciesNotFoundError("x")) == (404, "species_not_found")
    assert index_error_answer(StoreError("x")) == (500, "store_error")


def test_a_subclass_answers_as_its_nearest_listed_ancestor():
    class RenamedSpecies(SpeciesNotFoundError):
        pass

    class NewKind(CollectionError):
        pass

    assert index_error_answer(RenamedSpecies("x")) == (404, "species_not_found")
    assert index_error_answer(NewKind("x")) == (400, "collection_error")
