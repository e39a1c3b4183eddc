#!/usr/bin/python3
"""A fleetgate device in Python with Debian's packages only: python3-cryptography (key, CSR,
PKCS#7 answer) and python3-paho-mqtt (MQTT over mTLS). Enrolls over EST (RFC 7030 4.2.1: base64
DER PKCS#10, HTTP Basic = device id / factory token) on the first run, publishes telemetry and
waits for one command on devices/<id>/commands/#.

Settings from the environment: DEVICE_ID FACTORY_TOKEN (first run) CA_FILE EST_URL MQTT_HOST
MQTT_PORT STATE_DIR."""
import base64
import json
import os
import ssl
import sys
import urllib.request

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

env = os.environ
device_id = env["DEVICE_ID"]
ca_file = env["CA_FILE"]
state = env["STATE_DIR"]
os.makedirs(state, mode=0o700, exist_ok=True)
key_file = os.path.join(state, "device.key")
cert_file = os.path.join(state, "device.crt")


def write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def enroll(token):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    body = base64.b64encode(csr.public_bytes(serialization.Encoding.DER))
    basic = base64.b64encode(f"{device_id}:{token}".encode()).decode()
    request = urllib.request.Request(
        env["EST_URL"] + "/.well-known/est/simpleenroll",
        data=body,
        headers={"Content-Type": "application/pkcs10", "Authorization": f"Basic {basic}"},
    )
    tls = ssl.create_default_context(cafile=ca_file)  # the fleetgate CA only
    with urllib.request.urlopen(request, context=tls, timeout=30) as answer:
        der = base64.b64decode(answer.read())
    certs = pkcs7.load_der_pkcs7_certificates(der)
    mine = [c for c in certs if c.public_key().public_numbers() == key.public_key().public_numbers()]
    if len(mine) != 1:
        sys.exit("the EST answer does not hold a certificate for our key")
    write_private(
        key_file,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    write_private(cert_file, mine[0].public_bytes(serialization.Encoding.PEM))
    print(f"enrolled {device_id}", flush=True)


if not os.path.exists(cert_file):
    enroll(env["FACTORY_TOKEN"])
else:
    print(f"using stored credential of {device_id}", flush=True)

commands = f"devices/{device_id}/commands/#"
client = mqtt.Client(client_id=device_id, protocol=mqtt.MQTTv311)
client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)


def on_connect(c, _userdata, _flags, rc):
    if rc != 0:
        sys.exit(f"CONNACK {rc}")
    c.subscribe(commands, qos=1)
    c.publish(f"devices/{device_id}/telemetry", json.dumps({"t": 21.5, "source": "python"}), qos=1)


def on_publish(_c, _userdata, _mid):
    print("published telemetry", flush=True)


def on_subscribe(_c, _userdata, _mid, granted):
    if granted[0] == 0x80:
        sys.exit("subscription refused")
    print("subscribed", flush=True)


def on_message(c, _userdata, msg):
    print(f"command {msg.topic} {msg.payload.decode()}", flush=True)
    c.disconnect()


client.on_connect = on_connect
client.on_publish = on_publish
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(env["MQTT_HOST"], int(env["MQTT_PORT"]), keepalive=30)
client.loop_forever()
