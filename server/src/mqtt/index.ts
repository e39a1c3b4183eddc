/** The mTLS MQTT broker (see broker.ts for the path of a connection). */
export { type BrokerBackends, redisBackends } from './backends.js';
export {
  type BrokerDeps,
  type BrokerStore,
  newBrokerId,
  type RunningBroker,
  startBroker,
  startRoutedBroker,
} from './broker.js';
export {
  type BrokerObserver,
  type DisconnectCause,
  type Identity,
  NULL_BROKER_OBSERVER,
  type RefusalReason,
} from './types.js';
