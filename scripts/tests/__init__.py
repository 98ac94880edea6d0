"""Self-tests of scripts/deploy_checks (scripts/test runs `python -m pytest scripts/tests`).

This file makes pytest import the tests as the package `tests` under scripts/, which it puts on
sys.path, so `import deploy_checks` works from any working directory.
"""
