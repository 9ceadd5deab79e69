"""`mmsafety-serve`: a conf/model preset (the organism by default) over the OpenAI protocol
(docs/serving.md: what every request field does, streaming, the endpoints).

    mmsafety-serve                                  # the organism on http://127.0.0.1:8000/v1
    mmsafety-serve --model tiny_llava --port 8001
    MY_KEY=s3cret mmsafety-serve --api-key-env MY_KEY   # require that bearer key
"""

from __future__ import annotations

import argparse
import os
import sys

from mmsafety.errors import UserError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mmsafety-serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="organism", help="a conf/model preset (default: organism)")
    p.add_argument("--placement", default="cpu", help="a conf/placement preset (cpu, cuda, auto)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-name", default=None, help="model name clients ask for (default: the preset's name)")
    p.add_argument("--api-key-env", default=None,
                   help="environment variable holding the key clients must send (default: no key checked)")
    p.add_argument("--max-batch", type=int, default=16, help="choices run together in one generate, at most")
    p.add_argument("--delay-ms", type=float, default=0.0, help="added to every completion (benchmarks)")
    p.add_argument("--no-logprobs", action="store_true", help="never return logprobs, like some servers")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's). On a shared CPU use 1: a small model's forward "
                        "took 9 ms with 1 thread and 440 ms with 2 on 2 oversubscribed cores")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the model, e.g. model.seed=1")
    return p.parse_args(argv)


def main(argv=None) -> None:
    import uvicorn

    from mmsafety.app import compose_config, load_model
    from mmsafety.serving.app import create_app

    args = parse_args(argv)
    try:
        if args.max_batch < 1:
            raise UserError(f"--max-batch={args.max_batch}: must be >= 1")
        api_key = None
        if args.api_key_env:
            api_key = os.environ.get(args.api_key_env)
            if not api_key:
                raise UserError(f"--api-key-env={args.api_key_env}: that variable is not set; export it first")
        if args.threads is not None:
            import torch

            torch.set_num_threads(max(1, args.threads))
        cfg = compose_config("load_model", [f"model={args.model}", f"placement={args.placement}", *args.overrides])
        if cfg.model.adapter == "openai_compatible":
            raise UserError("--model: serve a local model (organism, tiny_llava, a checkpoint preset), "
                            "not a served one")
        from mmsafety.models.capabilities import GENERATE, require
        from mmsafety.models.registry import adapter_class

        require(adapter_class(cfg.model.adapter), [GENERATE], "mmsafety-serve", f"--model={args.model}")
        adapter = load_model(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    name = args.served_name or cfg.model.name
    app = create_app(adapter, name, api_key=api_key, delay_s=args.delay_ms / 1000, max_batch=args.max_batch,
                     logprobs=not args.no_logprobs)
    print(f"mmsafety-serve: {name} on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
