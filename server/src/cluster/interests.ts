/**
 * Which topics each broker worker has subscribers for, kept by the primary, so that a packet
 * relayed between workers (ipc-emitter.ts) goes only to the workers that will deliver it, instead
 * of to every other worker: with N workers a broadcast relay costs N-1 IPC copies per message.
 *
 * Workers report their topic filters as ordered operations: '+filter' when the filter gets its
 * first local subscriber, '-filter' when it loses its last. The matcher is qlobber with the
 * options the workers' mqemitter uses (separator '/', '+', '#', empty levels matched), so the
 * primary matches a topic exactly as the worker's emitter will.
 *
 * Causality (MQTT 3.1.1 section 3.8.4: a SUBACK means the subscription is in place): a worker
 * holds the SUBACK of a new filter until the primary acknowledges the batch that added it, and
 * the primary handles each worker's messages in order. A PUBLISH sent by any client after that
 * SUBACK reaches the primary after the filter is applied, so it is relayed.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface TopicSet {
  add(filter: string): unknown;
  remove(filter: string): unknown;
  test(topic: string): boolean;
}

// qlobber ships no type declarations; this is the part of its QlobberTrue API used here.
const { QlobberTrue } = require('qlobber') as { QlobberTrue: new (options: object) => TopicSet };

function topicSet(): TopicSet {
  return new QlobberTrue({ separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: true });
}

export class WorkerInterests<W> {
  private readonly sets = new Map<W, TopicSet>();

  /** Applies `worker`'s operations in order; true when one of them added a filter (to acknowledge). */
  apply(worker: W, ops: readonly string[]): boolean {
    if (ops.length === 0) return false;
    let set = this.sets.get(worker);
    if (!set) {
      set = topicSet();
      this.sets.set(worker, set);
    }
    let added = false;
    for (const op of ops) {
      const filter = op.slice(1);
      if (op.charCodeAt(0) === 43 /* + */) {
        set.add(filter);
        added = true;
      } else {
        set.remove(filter);
      }
    }
    return added;
  }

  /** Whether `worker` has a subscriber for `topic`. */
  wants(worker: W, topic: string): boolean {
    return this.sets.get(worker)?.test(topic) ?? false;
  }

  /** A worker is gone, and its subscriptions with it. */
  forget(worker: W): void {
    this.sets.delete(worker);
  }
}
