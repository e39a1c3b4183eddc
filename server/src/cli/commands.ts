/**
 * What the CLI knows about each command without loading it: the words that select it, the one-line
 * summary and the --help text. The implementation (which for `serve` is the whole server) is
 * imported only when the command runs, so `fleetgate --help` and an API call such as `devices list`
 * do not pay for modules they never use (issue 16 item 5).
 */

import { renderEnvHelp } from '../config-docs.js';
import { REVOCATION_REASON_NAMES } from '../revocation-reasons.js';
import type { CommandSpec } from './command.js';

const envHelp = renderEnvHelp();

export const COMMANDS: CommandSpec[] = [
  {
    path: ['serve'],
    summary: 'run the provisioning service (HTTPS API, EST, CRL, OCSP) and the mTLS MQTT broker',
    help: `Usage: fleetgate serve [--workers N]

Runs fleetgate in the foreground. On the first start it creates the data dir, the embedded
database (unless DATABASE_URL is set) and a new root + issuing CA; later starts load them.
Stops gracefully on SIGINT (Ctrl+C), SIGTERM or SIGHUP (the terminal closed).

Options:
  --workers N   MQTT broker worker processes sharing the MQTT port (default FLEETGATE_WORKERS,
                else the number of cores); 1 runs the broker in the serve process itself.
                Several nodes share messages and sessions through REDIS_URL (see README).

Environment:
${envHelp}
`,
    load: async () => (await import('./serve.js')).serveCommand,
  },
  {
    path: ['ca', 'export'],
    summary: 'print the CA bundle (root + issuing CA, PEM)',
    help: `Usage: fleetgate ca export [--issuing-only | --root-only]

Prints the PEM certificates devices and clients must trust: the root CA, then the issuing CA
(after \`ca rotate\`: every issuing CA not yet expired, newest first). Reads them from the data
dir (FLEETGATE_DATA_DIR, default ./.fleetgate); never prints keys.

Options:
  --root-only      only the root CA certificate
  --issuing-only   only the issuing CA certificate(s)

Example:
  npx fleetgate ca export > ca.pem
  openssl verify -CAfile ca.pem device.crt
`,
    load: async () => (await import('./ca-export.js')).caExportCommand,
  },
  {
    path: ['ca', 'init'],
    summary: 'create the CA with its keys in a PKCS#11 token (HSM)',
    help: `Usage: fleetgate ca init --pkcs11

Creates the root and issuing CA with both keys generated inside the PKCS#11 token named by
FLEETGATE_CA_KEY_URI (sensitive, not extractable): the issuing key is the URI's object, the root
key the object "<object>-root". The data dir receives the two certificates only. Refuses,
changing nothing, when the data dir already has a CA or the token already holds either key.
See docs/hsm.md.

Options:
  --pkcs11   keys in the token (required; a CA with key files is created by the first serve)

Environment:
  FLEETGATE_CA_KEY_URI        pkcs11:token=...;object=... (RFC 7512)
  FLEETGATE_PKCS11_MODULE     path of the PKCS#11 module (.so)
  FLEETGATE_PKCS11_PIN_FILE   file holding the user PIN
  FLEETGATE_CA_KEY_ALGORITHM, FLEETGATE_CA_NAME, FLEETGATE_DATA_DIR as for serve

Example:
  echo 1234 > pin && chmod 600 pin
  FLEETGATE_CA_KEY_URI='pkcs11:token=fleetgate;object=issuing-ca' \\
  FLEETGATE_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so FLEETGATE_PKCS11_PIN_FILE=pin \\
  npx fleetgate ca init --pkcs11
`,
    load: async () => (await import('./ca-init.js')).caInitCommand,
  },
  {
    path: ['ca', 'rotate'],
    summary: 'create the next issuing CA under the same root (rollover)',
    help: `Usage: fleetgate ca rotate [--root-key FILE]

Creates the next issuing CA under the same root: a new key where the issuing keys live
(ca/issuing-<n>.key, 0600, or the token object "<object>-<n>" with FLEETGATE_CA_KEY_URI,
generated in the token and not extractable) and its certificate ca/issuing-<n>.crt, signed by
the root. Servers started afterwards issue and renew from it; certificates of the earlier
issuing CAs stay valid, trusted and answered for (CRL, OCSP) until they expire or are revoked.
Touches the data dir and the token only. Refuses, changing nothing, on a missing or wrong root
key, an incomplete CA or a token without the key. See docs/hsm.md.

Options:
  --root-key FILE   the root key (unencrypted PKCS#8 PEM), read for this one signature; without
                    it: ca/root.key, else (FLEETGATE_CA_KEY_URI) the token object "<object>-root"

Example:
  npx fleetgate ca rotate --root-key /media/offline/root.key
  # then restart every fleetgate serve on this CA
`,
    load: async () => (await import('./ca-rotate.js')).caRotateCommand,
  },
  {
    path: ['ca', 'list'],
    summary: 'list every issuing CA: active, previous or retired',
    help: `Usage: fleetgate ca list [--json]

Lists every issuing CA of the fleet, newest first, with its subject, serial, validity, where its
key lives (file or the token's pkcs11: URI) and its state: active (new and renewed certificates
come from it), previous (issues nothing; its certificates stay trusted and their CRL and OCSP
are still answered) or retired (its last certificate has expired, or it has itself). Asks the
running server. See docs/hsm.md.

Options:
  --json   print the list as JSON
`,
    load: async () => (await import('./ca-list.js')).caListCommand,
  },
  {
    path: ['token', 'create'],
    summary: 'create one-time enrollment tokens (one device or a factory batch)',
    help: `Usage: fleetgate token create --device ID [--device ID ...] [--ttl 24h] [--require-attestation tpm] [--json]
       fleetgate token create --count N --prefix P [--ttl 24h] [--require-attestation tpm] [--json]

Creates one-time enrollment tokens. Each token is bound to one device id, expires (default
FLEETGATE_TOKEN_TTL, 24h) and is stored only as a hash: this is the one time it is shown.
A device enrolls with EST simpleenroll using HTTP Basic auth (user = device id, password = token).

Options:
  --device ID      device id (letters, digits, . _ -; up to 64), repeatable
  --count N        factory batch of N tokens for devices P0001, P0002, ... (with --prefix)
  --prefix P       device id prefix for a batch
  --ttl D          token lifetime: 90s, 15m, 24h, 30d
  --require-attestation tpm
                   enroll only a key proved to live in a TPM (docs/attestation.md); a CSR
                   without TPM evidence is refused with ATTESTATION_REQUIRED
  --json           print one JSON array of { "deviceId", "token", "expiresAt" }

Examples:
  npx fleetgate token create --device sensor-42
  npx fleetgate token create --count 500 --prefix line3-2026w48- --ttl 8h --json > batch.json
`,
    load: async () => (await import('./tokens.js')).tokenCreateCommand,
  },
  {
    path: ['token', 'list'],
    summary: 'list enrollment tokens: unused, expired, used (never the secret)',
    help: `Usage: fleetgate token list [--device ID] [--state unused|expired|used] [--limit N | --all] [--json]

Lists enrollment tokens, newest first, with their id, device, state, expiry and when they were
used. The secret was shown only when the token was created and is never listed.

Options:
  --device ID      only the tokens of this device
  --state S        unused (can still enroll), expired (unused past its expiry) or used
  --limit N        at most N tokens (default 100, up to 1000); the footer says what was left out
  --all            every token (follows the API's cursor page by page)
  --json           print { "tokens": [{ "id", "deviceId", "state", "createdAt", "expiresAt",
                   "usedAt", "createdBy" }], "total", "nextCursor" }

Example:
  npx fleetgate token list --state unused
`,
    load: async () => (await import('./token-manage.js')).tokenListCommand,
  },
  {
    path: ['token', 'revoke'],
    summary: 'revoke an unused enrollment token by id',
    help: `Usage: fleetgate token revoke ID [--json]

Deletes an unused (or expired) enrollment token so nobody can enroll with it; audited as
token.revoked. A used token cannot be revoked (revoke the device's certificate instead).
ID is the token id from \`fleetgate token list\`.

Example:
  npx fleetgate token revoke 0b6f3c1e-5d7a-4c1b-9f0e-2a4d8c6b1e90
`,
    load: async () => (await import('./token-manage.js')).tokenRevokeCommand,
  },
  {
    path: ['devices', 'list'],
    summary: 'list devices, their status and current certificate',
    help: `Usage: fleetgate devices list [--status S] [--limit N | --all] [--offset N] [--json]

Devices in id order. The footer (on stderr) says what was left out, e.g.
"showing 100 of 312 device(s); use --all or --limit".

Options:
  --status S   only devices in this state: active, revoked, reprovisioning or decommissioned
  --limit N    at most N devices (1-1000, default 100)
  --all        every device (follows the API's cursor page by page)
  --offset N   skip the first N (not with --all)
  --json       print { "devices": [...], "total", "nextCursor" } (the API's page)
`,
    load: async () => (await import('./devices.js')).devicesListCommand,
  },
  {
    path: ['devices', 'reprovision'],
    summary: 'let a revoked device back in with exactly one new enrollment token',
    help: `Usage: fleetgate devices reprovision ID --reason TEXT [--ttl 24h] [--json]

For hardware with a fixed id that was revoked by mistake or refurbished. Only a revoked device
can be re-provisioned. Prints the one new enrollment token (shown only now); \`token create\` for
this id is refused until the device has enrolled with it. Old certificates stay revoked.
Audited as device.reprovisioned with your operator and the reason (1-500 characters).
`,
    load: async () => (await import('./devices.js')).devicesReprovisionCommand,
  },
  {
    path: ['devices', 'decommission'],
    summary: 'retire a device for good (revokes its certificates, refuses every future token)',
    help: `Usage: fleetgate devices decommission ID --reason TEXT [--json]

Revokes every live certificate (reason cessationOfOperation), deletes its unused tokens and
refuses every future token, enrollment and re-provisioning for this id (DEVICE_DECOMMISSIONED).
The device, its certificates and its audit history stay listed. Audited as device.decommissioned.
`,
    load: async () => (await import('./devices.js')).devicesDecommissionCommand,
  },
  {
    path: ['devices', 'show'],
    summary: 'show one device with all its certificates',
    help: `Usage: fleetgate devices show <device-id> [--json]
`,
    load: async () => (await import('./devices.js')).devicesShowCommand,
  },
  {
    path: ['revoke'],
    summary: 'revoke a device (all its certificates) or one certificate',
    help: `Usage: fleetgate revoke <device-id> [--reason R] [--json]
       fleetgate revoke --serial HEX [--reason R] [--json]

Revokes every valid certificate of the device (or the one certificate). When the command returns,
the revocation is stored, the CRL is regenerated and OCSP answers "revoked".

Options:
  --serial HEX   revoke one certificate by serial instead of a whole device
  --reason R     RFC 5280 reason (default unspecified):
                 ${REVOCATION_REASON_NAMES.join(', ')}
  --json         print the API's JSON
`,
    load: async () => (await import('./revoke.js')).revokeCommand,
  },
  {
    path: ['service', 'create'],
    summary: 'issue a backend service credential for the MQTT broker (key made here)',
    help: `Usage: fleetgate service create NAME --out DIR [--json]

Makes a P-256 key here (it never leaves this machine), sends a CSR (CN = NAME) to the operator
API and writes:
  DIR/NAME.key   private key, PKCS#8 PEM, mode 0600
  DIR/NAME.crt   certificate with SAN URI urn:fleetgate:service:NAME, EKU clientAuth, mode 0644
  DIR/ca.pem     issuing + root CA certificates (to verify the broker), mode 0644
Existing key or certificate files are never overwritten (an existing ca.pem is kept), and
nothing is written through a symbolic link: a link at any of these paths is refused. All files
are created before the certificate is issued; if one cannot be written, the command fails, the
certificate is revoked and the files it created are removed.

On the broker the service connects with client id NAME or NAME-<suffix> (several instances) and
may by default subscribe to devices/+/# and publish to devices/+/commands/#
(FLEETGATE_MQTT_SERVICE_ACL changes that per service). Revoke it like a device:
  npx fleetgate revoke NAME

Options:
  --out DIR   directory for the files (created 0700 if missing)
  --json      print { name, serial, notAfter, key, certificate, ca } (file paths)

Example:
  npx fleetgate service create telemetry-ingest --out ./creds
  mosquitto_sub -h 127.0.0.1 -p 8883 --cafile creds/ca.pem --cert creds/telemetry-ingest.crt \\
    --key creds/telemetry-ingest.key -i telemetry-ingest-1 -t 'devices/+/telemetry' -v
`,
    load: async () => (await import('./service.js')).serviceCreateCommand,
  },
  {
    path: ['certs', 'expiring'],
    summary: 'list valid certificates expiring within N days',
    help: `Usage: fleetgate certs expiring --days N [--limit N | --all] [--json]

Soonest first. --limit N (1-1000, default 100), --all every one; --json prints
{ "certificates": [...], "total", "nextCursor" }.
`,
    load: async () => (await import('./devices.js')).certsExpiringCommand,
  },
  {
    path: ['operator', 'create'],
    summary: 'create an operator API credential (token shown once)',
    help: `Usage: fleetgate operator create <name> [--json]

Creates an operator credential for the API and this CLI (FLEETGATE_TOKEN). Stored hashed.
`,
    load: async () => (await import('./operators.js')).operatorCreateCommand,
  },
  {
    path: ['operator', 'list'],
    summary: 'list operator credentials',
    help: `Usage: fleetgate operator list [--limit N | --all] [--json]

Operator credentials, oldest first (never a token). --limit N (1-1000, default 100), --all every
one; --json prints { "operators": [...], "total", "nextCursor" }.
`,
    load: async () => (await import('./operators.js')).operatorListCommand,
  },
  {
    path: ['operator', 'revoke'],
    summary: 'revoke an operator credential',
    help: `Usage: fleetgate operator revoke <id>
`,
    load: async () => (await import('./operators.js')).operatorRevokeCommand,
  },
  {
    path: ['audit', 'verify'],
    summary: 'verify the tamper-evident audit chain',
    help: `Usage: fleetgate audit verify [--json]

Walks the audit trail and checks every event's hash link. Exit 0 when the chain is intact,
1 with the first broken link otherwise.
`,
    load: async () => (await import('./operators.js')).auditVerifyCommand,
  },
  {
    path: ['health'],
    summary: 'check that the server answers and its database is reachable (for health checks)',
    help: `Usage: fleetgate health [--json]

Asks the server's /readyz (HTTPS, trusting our CA) and exits 0 when the server is up and its
database is reachable, 1 otherwise. Finds the server like the other commands (serve.json in the
data dir, or FLEETGATE_URL); needs no operator token. Made for container health checks:

  HEALTHCHECK CMD ["node", "server/bin/fleetgate.js", "health"]
`,
    load: async () => (await import('./health.js')).healthCommand,
  },
];
