"""`mmsafety-serve`: a conf/model preset (the organism by default) over the OpenAI protocol
(docs/serving.md: what every request field does, streaming, the endpoints).

    mmsafety-serve                                  # the organism on http://127.0.0.1:8000/v1
    mmsafety-serve --model tiny_llava --port 8001
    MY_KEY=s3cret mmsafety-serve --api-key-env MY_KEY   # require that bearer key
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from mmsafety.errors import UserError
from mmsafety.models.capabilities import GENERATE, require
from mmsafety.serving.protocol import Limits


def parse_args(argv=None) -> argparse.Namespace:
    return parser().parse_args(argv)


def parser() -> argparse.ArgumentParser:
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
    p.add_argument("--tool-format", default="auto", choices=("auto", "hermes", "fu"),
                   help="how the model writes tool calls (auto: hermes when its chat template writes <tool_call>, else fu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's). On a shared CPU use 1: a small model's forward "
                        "took 9 ms with 1 thread and 440 ms with 2 on 2 oversubscribed cores")
    d = Limits()
    g = p.add_argument_group("limits (each checked before any model work; docs/serving.md)")
    g.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2 ** 20,
                   help="largest request body in MiB; 413 past it, before it is read whole (default %(default)g)")
    g.add_argument("--max-json-depth", type=int, default=d.max_json_depth,
                   help="deepest nesting of the JSON body; 400 past it (default %(default)d)")
    g.add_argument("--max-messages", type=int, default=d.max_messages, help="messages per request (default %(default)d)")
    g.add_argument("--max-parts", type=int, default=d.max_parts,
                   help="content parts per request, over all messages (default %(default)d)")
    g.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels,
                   help="pixels per image, read from its header before decoding (default %(default)d)")
    g.add_argument("--max-queue", type=int, default=d.max_queue,
                   help="requests in the server at once (read, waiting or running); 429 with Retry-After past it "
                        "(default %(default)d)")
    g.add_argument("--body-timeout-s", type=float, default=d.body_timeout_s,
                   help="a body not received whole within this many seconds gets a 408 (default %(default)g)")
    g.add_argument("--queue-timeout-s", type=float, default=d.queue_timeout_s,
                   help="a request not started after this many seconds gets a 429 (default %(default)g)")
    g.add_argument("--long-tokens", type=int, default=d.long_tokens,
                   help="requests allowed more new tokens than this run in a separate lane, so they cannot hold "
                        "short ones back, and hold at most half of --max-queue (default %(default)d)")
    g.add_argument("--grace-s", type=float, default=10.0,
                   help="on SIGTERM: stop accepting, let running requests finish for this long, end the rest with "
                        "a 503, exit 0 (default %(default)g)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the model, e.g. model.seed=1")
    return p


def limits_from(args: argparse.Namespace) -> Limits:
    for name in ("max_body_mb", "max_json_depth", "max_messages", "max_parts", "max_image_pixels", "max_queue",
                 "body_timeout_s", "queue_timeout_s", "long_tokens"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be > 0")
    if args.grace_s < 0:
        raise UserError(f"--grace-s={args.grace_s}: must be >= 0")
    return Limits(max_body_bytes=int(args.max_body_mb * 2 ** 20), max_json_depth=args.max_json_depth,
                  max_messages=args.max_messages, max_parts=args.max_parts, max_image_pixels=args.max_image_pixels,
                  max_queue=args.max_queue, body_timeout_s=args.body_timeout_s,
                  queue_timeout_s=args.queue_timeout_s, long_tokens=args.long_tokens)


def serve(app, host: str, port: int, grace_s: float) -> None:
    """uvicorn with a graceful SIGTERM/SIGINT: stop accepting, give running requests `grace_s`
    seconds (the app ends what is left with a 503 just before), then exit 0."""
    # heavy, deferred to when this runs: uvicorn
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # uvicorn's would re-raise the signal at the end: exit code 143
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
                return
            if not self.should_exit:
                print(f"mmsafety-serve: {signal.Signals(sig).name}: draining, {grace_s:g} s grace", file=sys.stderr,
                      flush=True)
                self.loop.call_soon_threadsafe(app.state.drain, grace_s)
            self.should_exit = True

        async def serve(self, sockets=None):
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=grace_s)
    Server(config).run()


def main(argv=None) -> None:
    # heavy, deferred to when this runs: mmsafety.app loads hydra/omegaconf/torch, mmsafety.serving.app loads torch/transformers
    from mmsafety.app import compose_config, load_model
    from mmsafety.serving.app import create_app

    args = parse_args(argv)
    try:
        if args.max_batch < 1:
            raise UserError(f"--max-batch={args.max_batch}: must be >= 1")
        limits = limits_from(args)
        api_key = None
        if args.api_key_env:
            api_key = os.environ.get(args.api_key_env)
            if not api_key:
                raise UserError(f"--api-key-env={args.api_key_env}: that variable is not set; export it first")
        if args.threads is not None:
            # heavy, deferred to when this runs: torch
            import torch

            torch.set_num_threads(max(1, args.threads))
        cfg = compose_config("load_model", [f"model={args.model}", f"placement={args.placement}", *args.overrides])
        if cfg.model.adapter == "openai_compatible":
            raise UserError("--model: serve a local model (organism, tiny_llava, a checkpoint preset), "
                            "not a served one")
        # heavy, deferred to when this runs: mmsafety.models.registry loads torch
        from mmsafety.models.registry import adapter_class

        require(adapter_class(cfg.model.adapter), [GENERATE], "mmsafety-serve", f"--model={args.model}")
        adapter = load_model(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    name = args.served_name or cfg.model.name
    app = create_app(adapter, name, api_key=api_key, delay_s=args.delay_ms / 1000, max_batch=args.max_batch,
                     logprobs=not args.no_logprobs, limits=limits, tool_format=args.tool_format)
    # One line per refused request, e.g. "mmsafety-serve 400 json_too_deep: the request body nests ..."
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mmsafety-serve %(message)s"))
    logging.getLogger("mmsafety.serve").addHandler(handler)
    logging.getLogger("mmsafety.serve").setLevel(logging.INFO)
    print(f"mmsafety-serve: {name} on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    serve(app, args.host, args.port, args.grace_s)
    print("mmsafety-serve: stopped", file=sys.stderr, flush=True)
    # Everything is answered and closed. Skip the interpreter's teardown of torch and transformers:
    # with only the main thread left it took 6 s on 2 busy cores, past a short --grace-s.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
