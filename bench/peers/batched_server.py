"""The batching Python peer: FastAPI + uvicorn (1 worker) + torch.jit.load with a simple asyncio
batching queue. Requests are tokenized on the event loop and queued; one batcher task takes
everything waiting (up to --max-batch-size sequences and --max-batch-tokens padded tokens, no
extra wait) and runs one forward pass on a single worker thread, so the event loop keeps
accepting requests meanwhile. Same /v1/embed JSON as aft-serve.

Usage: .venv/bin/python bench/peers/batched_server.py --model-dir DIR [--port 8091] [--threads 2]
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

import common
import torch
from fastapi import FastAPI, Request
from fastapi.responses import Response


def build_app(bundle: common.Bundle, max_batch_size: int, max_batch_tokens: int) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(batcher())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan)
    queue: asyncio.Queue = asyncio.Queue()
    executor = ThreadPoolExecutor(max_workers=1)
    stats = {"batches": 0, "inputs": 0}

    async def batcher() -> None:
        loop = asyncio.get_running_loop()
        pending = None
        while True:
            first = pending if pending is not None else await queue.get()
            pending = None
            items = [first]
            longest = len(first[0])
            while not queue.empty() and len(items) < max_batch_size:
                nxt = queue.get_nowait()
                if (len(items) + 1) * max(longest, len(nxt[0])) > max_batch_tokens:
                    pending = nxt
                    break
                items.append(nxt)
                longest = max(longest, len(nxt[0]))
            seqs = [seq for seq, _ in items]
            try:
                emb = await loop.run_in_executor(executor, common.forward, bundle, seqs)
            except Exception as exc:  # noqa: BLE001
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            stats["batches"] += 1
            stats["inputs"] += len(items)
            for i, (_, fut) in enumerate(items):
                if not fut.done():
                    fut.set_result(emb[i])

    @app.post("/v1/embed")
    async def embed(request: Request) -> Response:
        texts, normalize, dims = common.parse_request(await request.json())
        seqs = common.tokenize(bundle, texts)
        loop = asyncio.get_running_loop()
        futs = []
        for seq in seqs:
            fut = loop.create_future()
            await queue.put((seq, fut))
            futs.append(fut)
        rows = await asyncio.gather(*futs)
        emb = torch.stack(rows)
        return Response(
            common.response(bundle, emb, seqs, normalize, dims), media_type="application/json"
        )

    common.add_probe_routes(app, stats)
    return app


def main() -> None:
    ap = common.arg_parser(__doc__.splitlines()[0])
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--max-batch-tokens", type=int, default=8192)
    args = ap.parse_args()
    bundle = common.load_bundle(args.model_dir, args.threads, args.precision)
    common.serve(build_app(bundle, args.max_batch_size, args.max_batch_tokens), args)


if __name__ == "__main__":
    main()
