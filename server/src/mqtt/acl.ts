/**
 * Topic authorization. A device may publish and subscribe only inside `devices/<id>/#` and may
 * also subscribe to the configured read-only filters; a service gets the rights configured for
 * its name (default: subscribe `devices/+/#`, publish `devices/+/commands/#`).
 *
 * A SUBSCRIBE filter is granted only if every topic it can match is inside an allowed filter
 * (filter containment, not mere overlap): `#` or `devices/+/telemetry` from a device reaches
 * other devices' data and is refused with SUBACK 0x80 (MQTT 3.1.1 section 3.9.3). Topics and
 * filters starting with '$' are never granted, so `$SYS` cannot leak other clients' ids.
 */
import { DEFAULT_SERVICE_RIGHTS, type ServiceRights } from '../config.js';
import type { Identity } from './types.js';

export interface Rights {
  subscribe: string[][];
  publish: string[][];
}

const split = (filter: string): string[] => filter.split('/');

/** True if `topic` (no wildcards) matches `filter` (MQTT 3.1.1 section 4.7). */
export function topicMatches(topic: string[], filter: string[]): boolean {
  for (let i = 0; i < filter.length; i++) {
    const f = filter[i];
    if (f === '#') return true; // also matches the parent level itself [MQTT-4.7.1-2]
    if (i >= topic.length) return false;
    if (f !== '+' && f !== topic[i]) return false;
  }
  return topic.length === filter.length;
}

/** True if every topic matched by `inner` is matched by `outer`. */
export function filterWithin(inner: string[], outer: string[]): boolean {
  for (let i = 0; i < outer.length; i++) {
    const o = outer[i];
    if (o === '#') return true;
    if (i >= inner.length) return false;
    const n = inner[i];
    if (n === '#') return false;
    if (n === '+' ? o !== '+' : o !== '+' && o !== n) return false;
  }
  return inner.length === outer.length;
}

export function rightsFor(
  identity: Pick<Identity, 'kind' | 'id'>,
  config: { readonlyTopics: string[]; serviceAcl: Record<string, ServiceRights> },
): Rights {
  if (identity.kind === 'device') {
    // The id matches DEVICE_ID_PATTERN: no '/', '+' or '#' can widen the subtree.
    const own = ['devices', identity.id, '#'];
    return { subscribe: [own, ...config.readonlyTopics.map(split)], publish: [own] };
  }
  const r = config.serviceAcl[identity.id] ?? config.serviceAcl['*'] ?? DEFAULT_SERVICE_RIGHTS;
  return { subscribe: r.subscribe.map(split), publish: r.publish.map(split) };
}

/** Wildcards and U+0000 never belong in a topic name (MQTT 3.1.1 4.7.1-1, 1.5.3-2). */
const notATopicName = (topic: string): boolean => topic.includes('+') || topic.includes('#') || topic.includes('\0');

export function mayPublish(rights: Rights, topic: string): boolean {
  // aedes itself closes a connection whose PUBLISH has a wildcard topic; a will topic, and a NUL
  // anywhere, reach us here and are dropped.
  if (topic.startsWith('$') || notATopicName(topic)) return false;
  const t = split(topic);
  return rights.publish.some((f) => topicMatches(t, f));
}

export function maySubscribe(rights: Rights, filter: string): boolean {
  if (filter.startsWith('$')) return false;
  const f = split(filter);
  return rights.subscribe.some((allowed) => filterWithin(f, allowed));
}

/**
 * True if a message on `topic` may reach this client: the topic lies inside a filter it may
 * subscribe to. Checked when a stored session's queue is delivered, which aedes does without
 * asking authorizeSubscribe (see broker.ts, authorizeForward).
 */
export function mayReceive(rights: Rights, topic: string): boolean {
  if (topic.startsWith('$')) return false;
  const t = split(topic);
  return rights.subscribe.some((f) => topicMatches(t, f));
}
