"""Fixtures for the file-check tests: the bad-input corpus, written once per session."""
import pytest

from tests.data.bad_inputs import make_bad_inputs


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return make_bad_inputs(tmp_path_factory.mktemp("bad_inputs"))
