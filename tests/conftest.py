"""Shared test setup: the suite never writes into the user's own cache."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Loading a model that carries its mapping set unpacks it into $XDG_CACHE_HOME/openmm-herobm:
    a folder of this run's (subprocesses inherit it), not ~/.cache."""
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved
