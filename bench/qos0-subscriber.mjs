// Worker thread for the QoS 0 fan-in phase: the one subscriber, on its own event loop so that
// decrypting deliveries does not compete with the publishers' loop. Counts PUBLISH packets into a
// shared Int32Array (index 0) the publishers read for their flow-control window.
import { parentPort, workerData } from 'node:worker_threads';
import { identityContext, mqttConnect, packetReader, subscribePacket } from './mqtt-load.mjs';

const { port, identity, caPem, filter, counter } = workerData;
const count = new Int32Array(counter);
const c = await mqttConnect({ port, secureContext: identityContext(identity, caPem), clientId: identity.id });
const feed = packetReader((type, p) => {
  if (type === 3) Atomics.add(count, 0, 1);
  else if (type === 9) parentPort.postMessage({ granted: p[p.length - 1] });
});
c.socket.on('data', feed);
c.socket.on('close', () => parentPort.postMessage({ closed: true }));
c.socket.write(subscribePacket(filter));
parentPort.on('message', (m) => {
  if (m !== 'stop') return;
  c.socket.destroy();
  setImmediate(() => process.exit(0));
});
