#!/usr/bin/env python3
"""Reads `docker-compose config` output on stdin and checks that its services form a Kvasir
cluster: only the role subcommands and the flags of their contract, addresses that name existing
services and the ports they listen on, distinct decoder ids, a healthcheck on each service's gRPC
port, depends_on in start order (attention workers, router, decoders), the router's HTTP port
published. Prints every problem and exits 1 when there is one."""
import sys

import yaml

MODEL_FLAGS = {"model", "load-format", "dummy-config", "threads", "log-level"}
FLAGS = {  # the role subcommands and their flags
    "attention": MODEL_FLAGS | {"host", "grpc-port", "kv-blocks"},
    "router": MODEL_FLAGS | {"host", "port", "grpc-port", "decoders", "attention"},
    "decoder": MODEL_FLAGS
    | {"host", "grpc-port", "router", "decoder-id", "max-num-seqs", "max-num-batched-tokens"},
}
REQUIRED = {
    "attention": {"host", "grpc-port"},
    "router": {"host", "port", "grpc-port", "decoders", "attention"},
    "decoder": {"host", "grpc-port", "router", "decoder-id"},
}


def main():
    services = yaml.safe_load(sys.stdin)["services"]
    errors = []
    roles, flags = {}, {}  # service name -> role, {flag: value}

    for name, svc in services.items():
        env = svc.get("environment") or {}
        if not env.get("KVASIR_CLUSTER_SECRET"):
            errors.append(f"{name}: no KVASIR_CLUSTER_SECRET in its environment")
        cmd = [str(c) for c in svc.get("command") or []]
        if not cmd or cmd[0] not in FLAGS:
            errors.append(f"{name}: command must start with one of {sorted(FLAGS)}: {cmd}")
            continue
        role, args, given = cmd[0], cmd[1:], {}
        if len(args) % 2:
            errors.append(f"{name}: every flag takes a value: {args}")
        for flag, value in zip(args[::2], args[1::2]):
            if not flag.startswith("--") or flag[2:] not in FLAGS[role]:
                errors.append(f"{name}: `kvasir {role}` has no flag {flag}")
            if flag[2:] in given:
                errors.append(f"{name}: {flag} given twice")
            given[flag[2:]] = value
        for flag in sorted(REQUIRED[role] - given.keys()):
            errors.append(f"{name}: `kvasir {role}` needs --{flag}")
        roles[name], flags[name] = role, given
        test = [str(t) for t in (svc.get("healthcheck") or {}).get("test") or []]
        if not test:
            errors.append(f"{name}: no healthcheck")
        elif test[-1] != given.get("grpc-port"):
            errors.append(f"{name}: healthcheck probes port {test[-1]}, not its --grpc-port")

    def of_role(role):
        return sorted(n for n, r in roles.items() if r == role)

    def listed(name, flag):
        return [a.rpartition(":") for a in flags[name].get(flag, "").split(",") if a]

    def check_addresses(name, flag, role):
        for host, _, port in listed(name, flag):
            if roles.get(host) != role:
                errors.append(f"{name}: --{flag}: {host} is no {role} service")
            elif flags[host].get("grpc-port") != port:
                want = flags[host].get("grpc-port")
                errors.append(f"{name}: --{flag}: {host} listens on {want}, not {port}")

    def healthy_deps(name):
        deps = services[name].get("depends_on") or {}
        if not isinstance(deps, dict):
            return set()
        return {d for d, c in deps.items() if (c or {}).get("condition") == "service_healthy"}

    routers, attention, decoders = of_role("router"), of_role("attention"), of_role("decoder")
    if len(routers) != 1 or not attention or not decoders:
        errors.append(f"want 1 router, attention workers and decoders: {roles}")
    for r in routers:
        check_addresses(r, "attention", "attention")
        check_addresses(r, "decoders", "decoder")
        if sorted(h for h, _, _ in listed(r, "attention")) != attention:
            errors.append(f"{r}: --attention must list every attention service: {attention}")
        if sorted(h for h, _, _ in listed(r, "decoders")) != decoders:
            errors.append(f"{r}: --decoders must list every decoder service: {decoders}")
        for a in sorted(set(attention) - healthy_deps(r)):
            errors.append(f"{r}: must depend on {a} with condition service_healthy")
        published = [str(p.get("target") if isinstance(p, dict) else p).split(":")[-1]
                     for p in services[r].get("ports") or []]
        if flags[r].get("port") not in published:
            errors.append(f"{r}: its HTTP port {flags[r].get('port')} is not published")
    for d in decoders:
        check_addresses(d, "router", "router")
        router = flags[d].get("router", "").rpartition(":")[0]
        if router not in healthy_deps(d):
            errors.append(f"{d}: must depend on {router} with condition service_healthy")
    for a in attention:
        if services[a].get("depends_on"):
            errors.append(f"{a}: attention workers start first and depend on nothing")
    ids = [flags[d].get("decoder-id") for d in decoders]
    if len(set(ids)) != len(ids):
        errors.append(f"decoder ids are not distinct: {ids}")

    for e in errors:
        print("docker-compose.yml:", e, file=sys.stderr)
    if errors:
        return 1
    print(f"docker-compose.yml: {len(attention)} attention workers, 1 router, "
          f"{len(decoders)} decoders: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
