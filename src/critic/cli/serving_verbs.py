"""critic serve and critic label."""

from __future__ import annotations

import argparse

from critic.cli.options import columns_of_args, data_options
from critic.messages import to_stderr


def add_serve(verbs) -> None:
    from critic.inference.engines import BACKENDS

    verb = verbs.add_parser(
        "serve",
        help="an HTTP API with micro-batching and a web page",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a model over HTTP: POST /v1/predict, /v1/explain, /v1/score-csv; "
        "GET /healthz, /readyz, /metrics (Prometheus), /openapi.json, /docs, and a "
        "page at / to try it in a browser.",
        epilog="example:\n  CRITIC_API_KEY=secret critic serve runs/minilm-imdb --api-key-env "
        "CRITIC_API_KEY\n  curl -s localhost:8000/v1/predict -H 'X-API-Key: secret' "
        "-H 'Content-Type: application/json' -d '{\"text\": \"A fine film.\"}'",
    )
    verb.add_argument("model", help="a model folder written by `critic train`")
    verb.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    verb.add_argument("--port", type=int, default=8000)
    verb.add_argument("--workers", type=int, default=1, help="processes, each with its own copy of the model")
    verb.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="auto: on a CPU, the fastest backend `critic export` measured on this kind of CPU that kept the "
        "accuracy; without a measurement the ONNX export (int8 first) when present, else PyTorch",
    )
    verb.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="with the PyTorch backend (auto: bf16 where the chip has it)",
    )
    verb.add_argument(
        "--cascade",
        choices=("on", "off"),
        default="on",
        help="on: where the model has a cascade (`critic export --cascade`), its cheap stage answers the reviews it "
        "is sure of, counted in /metrics (critic_answers_total); off: the model answers all (default on)",
    )
    verb.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="texts scored together (1: no micro-batching; default 32, or 1 with ONNX Runtime on a CPU, where "
        "batching measured no faster)",
    )
    verb.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="how long the first request of a batch waits for company (default 0: batches form from "
        "requests that queue while the model is busy; a few ms can help on a GPU)",
    )
    add_serve_limits(verb.add_argument_group("limits: past each, a clear error at once, before any work"))
    verb.add_argument(
        "--api-key-env",
        help="name of an environment variable holding the API key that /v1/* requests must send as X-API-Key",
    )
    add_serve_feedback(verb)
    verb.add_argument(
        "--cors-origin", action="append", help="allow browser calls from this origin (repeatable; default: none)"
    )
    verb.add_argument(
        "--allowed-host",
        action="append",
        help="a Host name the server answers (repeatable; default: any, or only 127.0.0.1, localhost and [::1] "
        "when --host is a loopback address, against DNS rebinding)",
    )
    verb.set_defaults(run=cmd_serve)


def add_serve_feedback(verb) -> None:
    """What the server sends back: unsure answers to a labels store, and the watch on its traffic."""
    store = verb.add_argument_group("sending answers back to people (`critic label` shows them)")
    store.add_argument("--store", help="a labels store (FILE.db or a database URL) whose queue receives unsure answers")
    store.add_argument(
        "--store-min-accuracy",
        type=float,
        default=0.95,
        help="answers below the confidence that shows this accuracy on validation count as unsure and go to the "
        "store, whatever the client asked (default 0.95)",
    )
    store.add_argument(
        "--store-sample",
        type=float,
        default=0.02,
        help="the share of the other answers sent too, so that labels measure the accuracy in production "
        "(default 0.02)",
    )
    watching = verb.add_argument_group("watching what the server sees (/metrics and GET /v1/watch)")
    watching.add_argument(
        "--watch", action="store_true", help="the unsure share and class mix of recent answers, and their drift"
    )
    watching.add_argument(
        "--watch-min-accuracy", type=float, default=0.95, help="the target of 'unsure' for the watch (default 0.95)"
    )
    watching.add_argument(
        "--watch-drift-every",
        type=int,
        default=500,
        help="answers between drift scores of the latest 500 reviews against the training reviews (0: no drift)",
    )


def add_serve_limits(group) -> None:
    """One flag per limit of ServeSettings, with its default and help."""
    from critic.serve.settings import flag, limits

    for setting in limits():
        group.add_argument(
            flag(setting.name),
            dest=setting.name,
            type=type(setting.default),
            default=setting.default,
            metavar="SECONDS" if setting.name.endswith("_s") else "N",
            help=f"{setting.metadata['help']} (default {setting.default:,})",
        )


def cmd_serve(args) -> int:
    import os

    from critic.serve import ServeSettings, serve
    from critic.serve.settings import limits

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise SystemExit(f"critic serve: ${args.api_key_env} is empty; export the key there or drop --api-key-env")
    if args.api_key_env:
        del os.environ[args.api_key_env]  # read once; no process this one starts inherits it
    settings = ServeSettings(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        api_key=api_key,
        cors_origins=args.cors_origin or [],
        allowed_hosts=args.allowed_host or ["*"],
        store=args.store,
        store_min_accuracy=args.store_min_accuracy,
        store_sample=args.store_sample,
        watch=args.watch,
        watch_min_accuracy=args.watch_min_accuracy,
        watch_drift_every=args.watch_drift_every,
        cascade=args.cascade == "on",
        **{setting.name: getattr(args, setting.name) for setting in limits()},
    )
    to_stderr(
        f"serving {args.model} on http://{args.host}:{args.port}/ (page), /v1/predict, /docs"
        f"{'; API key required' if api_key else ''}"
    )
    serve(args.model, args.host, args.port, args.workers, settings, args.backend, args.precision)
    return 0


def add_label(verbs) -> None:
    verb = verbs.add_parser(
        "label",
        help="label your own reviews: a page that asks for the ones that teach the model most",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Import reviews (unlabelled or partly labelled, any format critic reads) into a labels store "
        "and serve a labelling page at / and its API under /v1/label. The page asks for one review at a time, "
        "the model's suggestion beside it; every --retrain-every labels the next model trains in the background "
        "(`critic train --data STORE`: few labels, then fine-tuning) and the page switches to it. Labels are "
        "committed before they are acknowledged; nothing is overwritten.",
        epilog="examples:\n  critic label reviews.csv --store reviews.db            start from unlabelled reviews"
        "\n  critic label --store reviews.db --model runs/minilm-imdb   go on, with a model's suggestions"
        "\n  critic serve runs/minilm-imdb --store reviews.db          unsure answers come back to the page"
        "\n  critic train --data reviews.db --output runs/mine          a model from the store's labels",
    )
    verb.add_argument("data", nargs="?", help="a review file to import first (reviews already stored are counted)")
    verb.add_argument("--store", required=True, help="the labels store: FILE.db (made if absent) or a database URL")
    verb.add_argument("--model", help="a model folder whose suggestions the page shows until the first retrain")
    verb.add_argument("--base-model", default="minilm", help="the encoder each retrain starts from (default minilm)")
    verb.add_argument("--retrain-every", type=int, default=50, help="new labels between retrains (0: on request)")
    verb.add_argument("--batch", type=int, default=20, help="reviews picked at a time (default 20)")
    verb.add_argument(
        "--pool-sample",
        type=int,
        default=1000,
        help="unlabelled reviews the model scores per round, a seeded sample of the pool (default 1000)",
    )
    verb.add_argument("--models", help="where retrained models go (default: FILE-models beside the store)")
    verb.add_argument(
        "--train-arg",
        action="append",
        default=[],
        help="a `critic train` flag for retrains (repeatable), after the loop's own, which it overrides "
        "(--train-arg=--frozen-layers --train-arg=0)",
    )
    verb.add_argument("--host", default="127.0.0.1")
    verb.add_argument("--port", type=int, default=8000)
    verb.add_argument("--api-key-env", help="name of an environment variable holding the key every call must send")
    data_options(verb)
    verb.set_defaults(run=cmd_label)


def cmd_label(args) -> int:
    import os

    from critic.serve.labelling import run_labelling

    api_key = os.environ.pop(args.api_key_env, None) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise SystemExit(f"critic label: ${args.api_key_env} is empty; export the key there or drop --api-key-env")
    run_labelling(args, columns_of_args(args), api_key, to_stderr)
    return 0
