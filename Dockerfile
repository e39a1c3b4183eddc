# fleetgate: provisioning service (CA, EST, CRL, OCSP) + mTLS MQTT broker.
# Same env contract as bare metal (README "Configuration"); data in the /data volume.
FROM node:20-bookworm-slim

# Build tools for the native PKCS#11 addon of the device client workspace (pkcs11js).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY server server
COPY device-client device-client
COPY firmware-sim firmware-sim
# `prepare` compiles the TypeScript; then development packages are dropped.
RUN npm install --no-audit --no-fund && npm prune --omit=dev --no-audit --no-fund

# The data dir holds the CA keys and the embedded database: private to the node user (0700), as
# fleetgate would make it. A volume mounted at /data (or /data/ca) starts with these modes.
RUN mkdir -p /data/ca && chown -R node:node /data && chmod -R 0700 /data
USER node
ENV FLEETGATE_DATA_DIR=/data \
    FLEETGATE_HOST=0.0.0.0 \
    NODE_ENV=production
VOLUME ["/data"]
EXPOSE 8443 8883 8080

HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 \
  CMD ["node", "server/bin/fleetgate.js", "health"]
CMD ["node", "server/bin/fleetgate.js", "serve"]
