#!/usr/bin/env bash
# Makes a throwaway CA and one certificate per service for the local mesh,
# with Istio-style SPIFFE identities as URI SANs:
#   spiffe://cluster.local/ns/ordermesh/sa/<service>
# Usage: envoy/mesh/certs.sh [OUT_DIR]   (default envoy/mesh/certs, git-ignored)
# Keys never leave OUT_DIR and are never committed; rerun to rotate.
set -euo pipefail

out=${1:-$(dirname "$0")/certs}
trust_domain=${TRUST_DOMAIN:-cluster.local}
namespace=${NAMESPACE:-ordermesh}
mkdir -p "$out"
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/O=ordermesh/CN=ordermesh local mesh CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null

for service in gateway order inventory payment; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/O=ordermesh/CN=$service" \
    -keyout "$out/$service.key" -out "$out/$service.csr" 2>/dev/null
  # Both server and client auth: a sidecar accepts calls and makes them.
  openssl x509 -req -in "$out/$service.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -days 30 -out "$out/$service.crt" -extfile <(cat <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=URI:spiffe://$trust_domain/ns/$namespace/sa/$service,DNS:localhost,IP:127.0.0.1
EXT
  ) 2>/dev/null
  rm "$out/$service.csr"
done
# The edge's server certificate (envoy/edge.yaml's HTTPS listener), for the
# names a local client uses.
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/O=ordermesh/CN=localhost" \
  -keyout "$out/edge.key" -out "$out/edge.csr" 2>/dev/null
openssl x509 -req -in "$out/edge.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
  -CAcreateserial -days 30 -out "$out/edge.crt" -extfile <(cat <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EXT
) 2>/dev/null
rm "$out/edge.csr"
rm -f "$out/ca.srl"
# Envoy reads the keys; it runs as the same user.
chmod 600 "$out"/*.key
echo "certs: CA, gateway, order, inventory, payment and edge certificates in $out"
