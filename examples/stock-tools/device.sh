#!/bin/sh
# A fleetgate device made of stock tools: openssl (key + CSR), curl (EST simpleenroll, RFC 7030
# 4.2.1, HTTP Basic = device id / factory token), openssl pkcs7 (certs-only answer -> PEM),
# mosquitto_pub / mosquitto_sub (MQTT over mTLS). Enrolls once; later runs reuse the files.
#   DEVICE_ID FACTORY_TOKEN(first run) CA_FILE EST_URL MQTT_HOST MQTT_PORT STATE_DIR
set -eu
: "${DEVICE_ID:?}" "${CA_FILE:?}" "${EST_URL:?}" "${MQTT_HOST:?}" "${MQTT_PORT:?}" "${STATE_DIR:?}"
mkdir -p "$STATE_DIR" && chmod 700 "$STATE_DIR" && cd "$STATE_DIR"
umask 077

if [ ! -s device.crt ]; then
  : "${FACTORY_TOKEN:?FACTORY_TOKEN is needed for the first enrollment}"
  # The key never leaves this directory; the CSR (CN = device id) is sent base64 DER.
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout device.key \
    -subj "/CN=$DEVICE_ID" -outform DER 2>/dev/null | openssl base64 > device.csr.b64
  curl -sS --fail-with-body --cacert "$CA_FILE" -u "$DEVICE_ID:$FACTORY_TOKEN" \
    -H 'Content-Type: application/pkcs10' --data-binary @device.csr.b64 \
    "$EST_URL/.well-known/est/simpleenroll" -o enroll.b64
  openssl base64 -d -in enroll.b64 | openssl pkcs7 -inform DER -print_certs -out device.crt
  openssl verify -CAfile "$CA_FILE" device.crt >/dev/null
  rm -f device.csr.b64 enroll.b64
  echo "enrolled $DEVICE_ID"
else
  echo "using stored credential of $DEVICE_ID"
fi

tls="--cafile $CA_FILE --cert device.crt --key device.key -h $MQTT_HOST -p $MQTT_PORT -i $DEVICE_ID"
# shellcheck disable=SC2086 # $tls is a list of options
mosquitto_pub $tls -q 1 -t "devices/$DEVICE_ID/telemetry" -m '{"t":21.5,"source":"stock-tools"}'
echo "published telemetry"
# Wait for one command; -d prints the SUBACK, which tells a watcher the subscription is live
# (stdbuf: line-buffered, so the SUBACK line shows at once when stdout is a pipe).
# shellcheck disable=SC2086
exec stdbuf -oL mosquitto_sub $tls -q 1 -d -C 1 -v -t "devices/$DEVICE_ID/commands/#"
