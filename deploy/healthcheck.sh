#!/bin/sh
# Container healthcheck of the kvasir image (Docker has no gRPC probe of its own).
#   kvasir-healthcheck grpc PORT   grpc.health.v1.Health/Check of service "" answers SERVING
#   kvasir-healthcheck http PORT   GET /health answers 200
# Only curl and od: a gRPC call is an HTTP/2 POST whose body is length-prefixed messages.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 grpc|http PORT" >&2; exit 2; }
kind=$1
port=$2
case $kind in
  http)
    exec curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$port/health"
    ;;
  grpc)
    # Request: flag 0 (uncompressed), length 0 (the empty HealthCheckRequest, service "").
    # SERVING reply: flag 0, length 2, then field 1 (status) = 1: 00 00000002 0801.
    reply=$(printf '\000\000\000\000\000' |
      curl -sS --http2-prior-knowledge --max-time 3 -H 'content-type: application/grpc' \
        -H 'te: trailers' --data-binary @- -o - \
        "http://127.0.0.1:$port/grpc.health.v1.Health/Check" | od -An -tx1 | tr -d ' \n')
    if [ "$reply" = 00000000020801 ]; then exit 0; fi
    echo "gRPC health on port $port: not SERVING (reply '${reply}')" >&2
    exit 1
    ;;
  *)
    echo "usage: $0 grpc|http PORT" >&2
    exit 2
    ;;
esac
