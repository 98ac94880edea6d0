"""Bundle specs of the A/B benchmark (bench/ab_bundles.py): `DIR` or `DIR@PRECISION`, the
precision passed to the aft-serve it starts as `--precision`."""

from pathlib import Path

import pytest
from harness.bundles import bundle_spec
from harness.servers import command


def test_a_spec_is_a_directory_and_an_optional_precision():
    assert bundle_spec("models/aft-mini") == (Path("models/aft-mini"), [])
    assert bundle_spec("models/aft-mini@float") == (
        Path("models/aft-mini"),
        ["--precision", "float"],
    )
    assert bundle_spec("/srv/b@int8") == (Path("/srv/b"), ["--precision", "int8"])
    assert bundle_spec("x@auto")[1] == ["--precision", "auto"]
    # An '@' inside a directory name is part of the path.
    assert bundle_spec("/srv/a@b/bundle") == (Path("/srv/a@b/bundle"), [])
    with pytest.raises(ValueError, match="float"):
        bundle_spec("models/aft-mini@fp16")


def test_the_precision_reaches_the_server_command_line():
    bundle, flags = bundle_spec("models/aft-mini@int8")
    program, argv = command("aft-serve", bundle, flags)
    assert program is None  # the release binary
    assert argv[:2] == ["--model-dir", "models/aft-mini"]
    assert argv[-2:] == ["--precision", "int8"]
