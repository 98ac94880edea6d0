"""The straightforward Python peer: FastAPI + uvicorn (1 worker) + torch.jit.load, one forward pass
per request, no batching across requests. Same /v1/embed JSON as aft-serve.

Usage: .venv/bin/python bench/peers/plain_server.py --model-dir DIR [--port 8090] [--threads 2]
       [--mode async|sync]
  async (default): the handler is `async def` and runs tokenize + forward inline, one at a time.
  sync: the handler is `def`; FastAPI runs it in its thread pool, so forwards overlap.
"""

from __future__ import annotations

import common
from fastapi import FastAPI, Request
from fastapi.responses import Response


def build_app(bundle: common.Bundle, mode: str) -> FastAPI:
    app = FastAPI()
    stats = {"batches": 0, "inputs": 0}

    def handle(body: dict) -> Response:
        texts, normalize, dims = common.parse_request(body)
        seqs = common.tokenize(bundle, texts)
        emb = common.forward(bundle, seqs)
        stats["batches"] += 1
        stats["inputs"] += len(texts)
        return Response(
            common.response(bundle, emb, seqs, normalize, dims), media_type="application/json"
        )

    if mode == "sync":

        @app.post("/v1/embed")
        def embed_sync(body: dict) -> Response:
            return handle(body)

    else:

        @app.post("/v1/embed")
        async def embed_async(request: Request) -> Response:
            return handle(await request.json())

    common.add_probe_routes(app, stats)
    return app


def main() -> None:
    ap = common.arg_parser(__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["async", "sync"], default="async")
    args = ap.parse_args()
    bundle = common.load_bundle(args.model_dir, args.threads, args.precision)
    common.serve(build_app(bundle, args.mode), args)


if __name__ == "__main__":
    main()
