/**
 * @fleetgate/device-client: the library a device embeds: keys (software, PKCS#11 HSM, TPM 2.0
 * via tpm2-pkcs11, with TPM attestation at enrollment), CSR, EST enrollment, credential directory, MQTT over mTLS with TLS session
 * resumption, automatic renewal. See README.md.
 */
export { Backoff, type BackoffOptions } from './backoff.js';
export {
  DeviceClient,
  type DeviceClientEvents,
  type DeviceClientOptions,
  type KeyStoreConfig,
  type RenewalOptions,
  type RenewedEvent,
  renewalDueAt,
} from './client.js';
export {
  CREDENTIAL_FILE,
  type Credential,
  CredentialStore,
  credentialFrom,
  PENDING_FILE,
  type SavedSession,
  SESSION_FILE,
} from './credentials.js';
export { ATTR_EVIDENCE, createCsrWithEvidence, EVIDENCE_TPM2_CERTIFY, evidenceAttributeValue } from './csr-evidence.js';
export {
  BrokerRefusedError,
  CaMismatchError,
  CertificateVerificationError,
  CredentialError,
  DEVICE_ERROR_CODES,
  DeviceClientError,
  type DeviceErrorCode,
  EnrollmentError,
  isDeviceClientError,
  KeyStoreError,
  RenewalError,
  ServerUnreachableError,
  TpmError,
} from './errors.js';
export { EstClient, type EstClientOptions, mapServerRefusal, parseCertsOnly } from './est.js';
export { TypedEmitter } from './events.js';
export {
  findPkcs11Engine,
  Pkcs11KeyStore,
  type Pkcs11KeyStoreOptions,
  parsePkcs11Uri,
  pkcs11EnginePreloaded,
  pkcs11OpenSslConfig,
  pkcs11Uri,
} from './keys/pkcs11.js';
export { SoftwareKeyStore } from './keys/software.js';
export { TpmKeyStore, type TpmKeyStoreOptions } from './keys/tpm.js';
export type { DeviceKey, KeyRef, KeyStore, TlsKeyOptions } from './keys/types.js';
export {
  type ConnectedEvent,
  type DisconnectedEvent,
  MqttSession,
  type MqttSessionEvents,
  type MqttSessionOptions,
  type RevokedEvent,
  type SessionCredential,
} from './mqtt-session.js';
export { crlRevocationCheck, type RevocationCheck } from './revocation.js';
export {
  type AttestationChallenge,
  type AttestationChallengeRequest,
  type AttestationExchange,
  type AttestationStep,
  type CollectEvidenceOptions,
  collectTpmEvidence,
  EK_CERT_NV_INDEX,
  type EkType,
  type Tpm2CertifyStatement,
  type TpmKeyBlobs,
} from './tpm/attest.js';
export { TpmTools, type TpmToolsOptions } from './tpm/tools.js';
export { createCsr, verifyChain, verifyIssuedCertificate } from './x509.js';

export const DEVICE_CLIENT_VERSION = '0.1.0';
