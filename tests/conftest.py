"""Fixtures and session settings only; the helpers the test modules import live in tests/helpers/."""

import os
import sys
import zlib

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

# keep the suite quick and deterministic on small CI machines
# small tensors: intra-op threads only add synchronisation overhead (and are very slow on a loaded
# 2-core machine); the multi-threaded kernel path has its own test (test_large_input_multithreaded)
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slower test (still run by default)")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state."""
    torch.manual_seed(zlib.crc32(os.environ.get("AF_TEST_SEED_SALT", "").encode()))
    yield


@pytest.fixture
def gen(request):
    """A torch.Generator seeded from the test id: distinct but reproducible data per parametrization."""
    g = torch.Generator()
    # AF_TEST_SEED_SALT=<anything> draws other (still reproducible) data, to check the tests are not
    # tuned to one draw
    salt = os.environ.get("AF_TEST_SEED_SALT", "")
    g.manual_seed(zlib.crc32((salt + request.node.nodeid).encode()) & 0x7FFFFFFF)
    return g


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server (:class:`helpers.postgres.PostgresServer`), removed after the test."""
    pytest.importorskip("psycopg", reason="psycopg is needed for the PostgreSQL storage (test extra)")
    from helpers.postgres import PostgresServer

    server = PostgresServer()
    try:
        yield server
    finally:
        server.remove()
