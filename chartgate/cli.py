"""The `chartgate` command: one subcommand per process or tool (serve, adapter, fhir-store, demo, ...)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_WORKDIR = Path(".chartgate")
SHIPPED = "the library shipped with Chartgate"
ENGINES = ("regorus", "opa")


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _key_values(pairs: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE arguments as a dict; ValueError names the first malformed one."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        values[key] = value
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chartgate",
        description="Policy-as-code authorization sidecar for AI agents writing to EHRs over FHIR.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def workdir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--workdir",
            type=Path,
            default=DEFAULT_WORKDIR,
            help="directory for keys, ledger and audit log (default ./.chartgate)",
        )

    p = sub.add_parser("serve", help="run the sidecar (agent-facing gRPC ToolGateway)")
    workdir(p)
    p.add_argument(
        "--config", type=Path, required=True, help="sidecar JSON config (docs/configuration.md)"
    )
    p.add_argument(
        "--listen", default="127.0.0.1:50051", help="HOST:PORT (default 127.0.0.1:50051)"
    )
    p.add_argument(
        "--token-key",
        type=Path,
        default=None,
        help="private token-signing JWK, e.g. mounted from a Secret "
        "(default WORKDIR/keys/token-signing.jwk, created if absent)",
    )
    p.add_argument(
        "--audit-key",
        type=Path,
        default=None,
        help="private audit-signing JWK (default WORKDIR/keys/audit-signing.jwk)",
    )

    p = sub.add_parser(
        "adapter", help="run an adapter (verifies tokens, writes to one FHIR server)"
    )
    workdir(p)
    p.add_argument(
        "--listen", default="127.0.0.1:50052", help="HOST:PORT (default 127.0.0.1:50052)"
    )
    p.add_argument(
        "--fhir-base", required=True, help="FHIR R4 base URL, e.g. http://127.0.0.1:8080/fhir"
    )
    p.add_argument(
        "--audience", default="chartgate-adapter", help="this adapter's name (token aud)"
    )
    p.add_argument("--issuer", default="chartgate-sidecar", help="expected token iss")
    p.add_argument(
        "--jwks",
        type=Path,
        default=None,
        help="sidecar's public token JWKS (default WORKDIR/keys/token-signing.jwks.json)",
    )
    p.add_argument(
        "--smart-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="SMART Backend Services settings JSON for the EHR (docs/smart.md); "
        "without it FHIR requests carry no Authorization",
    )
    p.add_argument(
        "--fhir-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="deadline of one FHIR request (default 10); past it the write is ambiguous",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="token bucket for this EHR connection: requests a second (default: no limit)",
    )
    p.add_argument("--rate-burst", type=int, default=20, help="token bucket size (default 20)")
    p.add_argument(
        "--breaker-threshold",
        type=int,
        default=5,
        help="consecutive EHR failures that open the circuit breaker (default 5)",
    )
    p.add_argument(
        "--breaker-cool-down",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long the breaker stays open before one probe is let through (default 10)",
    )
    p.add_argument(
        "--vendor",
        default="generic",
        metavar="NAME",
        help="the EHR's vendor profile: what it accepts, how it fails (docs/adapters.md; "
        "default generic)",
    )
    p.add_argument(
        "--vendor-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a value the vendor profile needs, e.g. practice_id=195900 (repeatable)",
    )

    p = sub.add_parser("fhir-store", help="run the local FHIR R4 store (a development target)")
    workdir(p)
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default 127.0.0.1:8080)")
    from chartgate.devstore.options import add_store_options

    add_store_options(p)

    p = sub.add_parser(
        "dev-issuer", help="the development OIDC issuer for reviewers (a development target)"
    )
    from chartgate.devissuer.cli import configure_parser as configure_dev_issuer

    configure_dev_issuer(p)

    p = sub.add_parser(
        "console", help="run the reviewer console: web pages over the Review API (docs/console.md)"
    )
    from console.cli import configure_parser as configure_console

    configure_console(p)

    p = sub.add_parser(
        "demo", help="run sidecar, adapter and FHIR store and drive an example agent"
    )
    workdir(p)
    p.add_argument(
        "--policy-dir", type=Path, default=None, help=f"Rego policy directory (default: {SHIPPED})"
    )

    p = sub.add_parser("keys", help="signing keys")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = keys_sub.add_parser("init", help="create the token and audit signing keys and their JWKS")
    workdir(k)

    from sidecar.audit.commands import add_audit_parser

    add_audit_parser(sub)

    from sidecar.review.commands import add_review_parser

    add_review_parser(sub)
    from sidecar.review.deadletter_commands import add_deadletter_parser

    add_deadletter_parser(sub)

    p = sub.add_parser("policy", help="policy tools")
    policy_sub = p.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    t = policy_sub.add_parser("test", help="run the *_test.rego tests on an in-process engine")
    t.add_argument(
        "dir", type=Path, nargs="?", default=None, help=f"policy directory (default: {SHIPPED})"
    )
    t.add_argument(
        "--engine", choices=ENGINES, default="regorus", help="engine (default regorus; opa: OPA's)"
    )
    e = policy_sub.add_parser("eval", help="evaluate one input and explain the decision")
    e.add_argument("--input", type=Path, required=True, help="policy input JSON (docs/policy.md)")
    e.add_argument(
        "--policy-dir", type=Path, default=None, help=f"policy directory (default: {SHIPPED})"
    )
    e.add_argument("--data", type=Path, default=None, help="operator data JSON")
    e.add_argument("--engine", choices=ENGINES, default="regorus", help="engine (default regorus)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request line (URL and query) at INFO: the adapter's own log lines say
    # what happened without them, and a query string is no place for a log to copy.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    command: str = args.command
    if command == "serve":
        from sidecar.config import SidecarConfig
        from sidecar.server.app import serve

        serve(
            SidecarConfig.load(args.config),
            args.workdir,
            args.listen,
            token_key=args.token_key,
            audit_key=args.audit_key,
        )
        return 0
    if command == "adapter":
        from pydantic import ValidationError

        from adapters.server import AdapterConfig
        from adapters.server import serve as serve_adapter
        from adapters.smart import SmartSettings

        try:
            smart = SmartSettings.load(args.smart_config) if args.smart_config else None
            vendor_settings = _key_values(args.vendor_setting)
        except ValueError as exc:
            print(f"chartgate adapter: {exc}", file=sys.stderr)
            return 2
        try:
            adapter_config = AdapterConfig(
                listen=args.listen,
                fhir_base_url=args.fhir_base,
                audience=args.audience,
                issuer=args.issuer,
                jwks_path=args.jwks or args.workdir / "keys" / "token-signing.jwks.json",
                workdir=args.workdir,
                smart=smart,
                fhir_timeout_seconds=args.fhir_timeout,
                rate_limit_per_second=args.rate_limit,
                rate_limit_burst=args.rate_burst,
                breaker_threshold=args.breaker_threshold,
                breaker_cool_down_seconds=args.breaker_cool_down,
                vendor=args.vendor,
                vendor_settings=vendor_settings,
            )
        except ValidationError as exc:
            print(f"chartgate adapter: invalid setting: {exc}", file=sys.stderr)
            return 2
        serve_adapter(adapter_config)
        return 0
    if command == "fhir-store":
        from chartgate.devstore.app import serve as serve_store

        host, port = _host_port(args.listen)
        try:
            serve_store(
                host,
                port,
                args.workdir / "fhir-store" / "store.sqlite3",
                faults=args.faults,
                allow_fault_control=args.allow_fault_control,
                clients=args.clients,
                behave_like=args.behave_like,
            )
        except ValueError as exc:  # a bad --faults or --clients file or --behave-like, named
            print(f"chartgate fhir-store: {exc}", file=sys.stderr)
            return 2
        return 0
    if command == "console":
        from console.cli import run as run_console

        return run_console(args)
    if command == "dev-issuer":
        from chartgate.devissuer.cli import run as run_dev_issuer

        return run_dev_issuer(args)
    if command == "demo":
        from chartgate.demo import run_demo
        from sidecar.policy.library import shipped_policy_dir

        return run_demo(args.workdir, args.policy_dir or shipped_policy_dir())
    if command == "keys":
        from chartgate import keys
        from sidecar.server.app import WorkdirLayout

        layout = WorkdirLayout(args.workdir)
        for path, prefix in ((layout.token_key, "token"), (layout.audit_key, "audit")):
            key = keys.load_or_create(path, prefix)
            print(f"{prefix} key {key.kid}: public JWKS at {keys.public_jwks_path(path)}")
        return 0
    if command == "audit":
        from sidecar.audit.commands import audit_command

        return audit_command(args)
    if command == "deadletter":
        from sidecar.review.deadletter_commands import deadletter_command

        return deadletter_command(args)
    if command == "review":
        from sidecar.review.commands import review_command

        return review_command(args)
    if command == "policy":
        from sidecar.policy.library import shipped_policy_dir

        if args.policy_command == "test":
            from sidecar.policy.testing import policy_test_command

            return policy_test_command(args.dir or shipped_policy_dir(), args.engine)
        from sidecar.policy.explain import eval_command

        return eval_command(
            args.input, args.policy_dir or shipped_policy_dir(), args.data, args.engine
        )
    raise AssertionError(command)  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
