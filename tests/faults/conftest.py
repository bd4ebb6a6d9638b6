"""The CLI fixtures (tiny Jungfraujoch masters; no global compilation cache in-process)."""

from tests.cli.conftest import (  # noqa: F401  (fixtures)
    _no_global_compilation_cache,
    master_factory,
    shared_master,
)
