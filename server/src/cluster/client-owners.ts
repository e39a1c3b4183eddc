/**
 * Which broker worker holds each MQTT client id, kept by the primary, so that a second
 * connection with a client id held by another worker takes the first one over (MQTT 3.1.1
 * section 3.1.4 point 2, [MQTT-3.1.4-2]) without telling every worker about every connect.
 *
 * Workers report in batches: ids whose CONNECT they accepted (claims) and ids they no longer
 * hold (releases; a worker reports a release only once no connection of its own has that id).
 * A claim of an id held by another worker yields a takeover order for that worker. A stale entry
 * is harmless (its worker ignores a takeover for an id it does not hold); releases keep the map
 * as small as the set of connected clients.
 */
export class ClientOwners<W> {
  private readonly owner = new Map<string, W>();

  /**
   * Applies one batch from `from`: claims in order, then releases. The worker sends a release
   * only for an id it holds no more at the end of the batch (a claim after a release cancels the
   * release), so a release always wins over a claim of the same batch. Returns, per other worker,
   * the ids it must close.
   */
  apply(from: W, claims: readonly string[], releases: readonly string[]): Map<W, string[]> {
    const takeovers = new Map<W, string[]>();
    for (const id of claims) {
      const previous = this.owner.get(id);
      this.owner.set(id, from);
      if (previous === undefined || previous === from) continue;
      const ids = takeovers.get(previous);
      if (ids) ids.push(id);
      else takeovers.set(previous, [id]);
    }
    for (const id of releases) if (this.owner.get(id) === from) this.owner.delete(id);
    return takeovers;
  }

  /** A worker is gone: every id it held is free. */
  forget(worker: W): void {
    for (const [id, w] of this.owner) if (w === worker) this.owner.delete(id);
  }

  get size(): number {
    return this.owner.size;
  }
}
