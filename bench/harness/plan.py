"""How long and at which points every part measures: the full run, or --quick (tiny durations
that prove the whole pipeline in a few minutes; its numbers are not for quoting)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Plan:
    name: str
    warmup_s: float  # a discarded oha run at c=16 after each server start
    point_s: float  # one closed- or open-loop point (compare, config)
    concurrency: tuple[int, ...]  # closed-loop sweep
    open_fractions: tuple[float, ...]  # open-loop rates, as fractions of aft-serve's capacity
    open_connections: int
    plain_mode_check_s: float  # each handler style of the plain peer, before the sweep
    config_grid: tuple[tuple[int, int], ...]  # (workers, intra-op threads) at config_mbt
    config_mbt: int
    config_extra_mbt: tuple[int, ...]  # tried with the grid's best pair
    limit_s: float
    limit_configs: str  # forward_bench --configs (WORKERSxTHREADS,...)
    limit_mbt: str  # forward_bench --max-batch-tokens
    limit_depths: str  # forward_bench --queue-depths
    overload_s: float
    overload_edge_s: float  # the c=16 points before and after the overload
    overload_connections: int
    soak_s: float
    soak_warmup_s: float
    soak_sample_s: float
    soak_window_s: float  # RSS is judged by each window's peak (bench/parts/soak.py)
    profile_s: float

    def facts(self) -> dict:
        return asdict(self)


FULL = Plan(
    name="full",
    warmup_s=2.0,
    point_s=8.0,
    concurrency=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    open_fractions=(0.1, 0.3, 0.5, 0.7, 0.9, 1.1),
    open_connections=256,
    plain_mode_check_s=4.0,
    config_grid=((1, 1), (1, 2), (2, 1), (2, 2)),
    config_mbt=8192,
    config_extra_mbt=(2048, 16384),
    limit_s=5.0,
    limit_configs="1x2,2x1,1x1,2x2",
    limit_mbt="8192,2048,16384",
    limit_depths="256,64,16",
    overload_s=60.0,
    overload_edge_s=8.0,
    overload_connections=1024,
    soak_s=600.0,
    soak_warmup_s=60.0,
    soak_sample_s=5.0,
    soak_window_s=60.0,
    profile_s=20.0,
)

QUICK = Plan(
    name="quick",
    warmup_s=0.5,
    point_s=1.0,
    concurrency=(1, 16, 64),
    open_fractions=(0.5,),
    open_connections=64,
    plain_mode_check_s=1.0,
    config_grid=((1, 1), (1, 2)),
    config_mbt=8192,
    config_extra_mbt=(2048,),
    limit_s=0.5,
    limit_configs="1x2,1x1",
    limit_mbt="8192,2048",
    limit_depths="256",
    overload_s=3.0,
    overload_edge_s=1.0,
    overload_connections=128,
    soak_s=6.0,
    soak_warmup_s=2.0,
    soak_sample_s=1.0,
    soak_window_s=2.0,
    profile_s=3.0,
)

PLANS = {p.name: p for p in (FULL, QUICK)}
