import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

# keep the suite quick and deterministic on small CI machines
# small tensors: intra-op threads only add synchronisation overhead (and are very slow on a loaded
# 2-core machine); the multi-threaded kernel path has its own test (test_large_input_multithreaded)
TORCH_THREADS_DEFAULT = torch.get_num_threads()
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


# per-dtype tolerances for comparing the library against a float64 reference
TOLERANCES = {
    # atol is relative to the largest |expected| of the compared tensor (see assert_close)
    torch.float64: dict(rtol=1e-7, atol=1e-9),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    # float16 gradients below 6e-5 are subnormal: allow one subnormal ulp (2**-24) absolute
    torch.float16: dict(rtol=4e-3, atol=2e-3, floor=2.0 ** -24),
    torch.bfloat16: dict(rtol=3e-2, atol=2e-2),
}


def tol(dtype):
    t = dict(TOLERANCES[dtype])
    t.setdefault("floor", 0.0)
    return t


def assert_close(actual, expected, dtype, scale_atol=True, msg=""):
    """Compare ``actual`` with the float64 ``expected`` at the tolerance of ``dtype``.

    With scale_atol the absolute tolerance is relative to the largest |expected| (gradients of a
    mean over many elements are tiny, and elementwise cancellation errors scale with the largest
    terms)."""
    t = tol(dtype)
    exp = expected.detach().to(torch.float64)
    act = actual.detach().to(torch.float64)
    assert act.shape == exp.shape, f"{msg} shape {tuple(act.shape)} != {tuple(exp.shape)}"
    atol = t["atol"]
    if scale_atol:
        m = float(exp.abs().max()) if exp.numel() else 0.0
        atol = max(atol * m, t["floor"], 1e-30)
    torch.testing.assert_close(act, exp, rtol=t["rtol"], atol=atol, equal_nan=False,
                               msg=(lambda m0: f"{msg}\n{m0}") if msg else None)


@pytest.fixture
def close():
    return assert_close


def compare_with_reference(lib_call, ref, x, t, g, kw, reduction, dtype, gen, detach=False):
    """Loss and input gradient of the library against a float64 reference, under the same random upstream
    gradient; checks shapes, dtypes (float32 loss for half inputs, input-dtype gradient) and finiteness."""
    from _reference import upstream_like, value_and_grad

    extra = {"detach_modulator": True} if detach else {}
    ref_loss0, _ = value_and_grad(lambda xx: ref(xx, t, g, reduction=reduction, **kw), x.double())
    up = upstream_like(ref_loss0, gen)
    ref_loss, ref_grad = value_and_grad(
        lambda xx: ref(xx, t, g, reduction=reduction, detach_modulator=detach, **kw), x.double(), upstream=up)
    loss, grad = value_and_grad(lambda xx: lib_call(xx, t, g, kw, reduction, **extra), x, upstream=up)
    assert loss.shape == ref_loss.shape
    assert loss.dtype == (torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype)
    assert grad.dtype == x.dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_close(loss, ref_loss, dtype, msg="loss")
    assert_close(grad, ref_grad, dtype, msg="grad")
    return loss, grad


def train_tiny(callback, loss, epochs=2, batches=3, n=48, features=5, on_epoch=None):
    """A small softmax model trained with ``loss`` and ``callback`` (GammaCallback-like) in a plain loop; the
    validation statistics of the whole set go to ``callback.on_epoch_end`` and then to ``on_epoch(val, epoch)``."""
    torch.manual_seed(0)
    model = torch.nn.Linear(features, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, features, generator=g), torch.randint(0, 3, (n,), generator=g)
    val = None
    for epoch in range(epochs):
        for idx in torch.arange(n).split(n // batches):
            value, stats = loss(model(x[idx]), y[idx], return_stats=True)
            opt.zero_grad()
            value.backward()
            opt.step()
            callback.on_train_batch_end(stats)
        with torch.no_grad():
            _, val = loss(model(x), y, return_stats=True)
        callback.on_epoch_end(val)
        if on_epoch is not None:
            on_epoch(val, epoch)
    return val


# -- a throwaway PostgreSQL server (the distributed-storage tests; .ci/run installs the binaries) ------------------
def _pg_bin(name):
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")) if Path("/usr/lib/postgresql").is_dir() else []
    return str(found[-1]) if found else shutil.which(name)


class PostgresServer:
    """A PostgreSQL server in a temporary folder: ``url``, and ``stop()`` / ``start()`` to take it away."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            pytest.skip("no PostgreSQL binaries (initdb, pg_ctl); .ci/run installs them")
        self.prefix = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own user
            runuser = shutil.which("runuser")
            try:
                import pwd
                pwd.getpwnam("postgres")
            except KeyError:
                runuser = None
            if not runuser:
                pytest.skip("running as root without runuser or a 'postgres' user: cannot start PostgreSQL")
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="af-pg-"))
        if self.prefix:
            shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        subprocess.run(self.prefix + [self.initdb, "-A", "trust", "-U", "postgres", "-D", str(self.data)],
                       check=True, capture_output=True, timeout=60)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def start(self) -> None:
        subprocess.run(self.prefix + [self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t",
                                      "30", "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                                      "-c fsync=off", "start"], check=True, capture_output=True, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(self.prefix + [self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=60)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres():
    pytest.importorskip("psycopg", reason="psycopg is needed for the PostgreSQL storage (test extra)")
    server = PostgresServer()
    try:
        yield server
    finally:
        server.remove()
