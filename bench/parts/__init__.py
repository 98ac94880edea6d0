"""The benchmark parts, each `run(ctx)` writing results/<part>.json. bench/run-all runs them in
this order: the config study's choice is how aft-serve runs in every later part, and overload
and soak size their load on compare's measured capacity."""

from parts import compare, config, limit, overload, profile, soak

PARTS = {
    "limit": limit.run,
    "config": config.run,
    "compare": compare.run,
    "profile": profile.run,
    "overload": overload.run,
    "soak": soak.run,
}
