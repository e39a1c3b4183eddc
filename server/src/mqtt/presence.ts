/**
 * Online state and last-seen time per identity, written to the store in batches (one markSeen
 * per flush interval for the whole broker), never one write per packet.
 */
import type { Logger } from 'pino';
import type { Store } from '../store/types.js';

interface Entry {
  at: number;
  online: boolean;
}

export class PresenceBatcher {
  private pending = new Map<string, Entry>();
  private flushing: Promise<void> | null = null;

  constructor(
    private readonly store: Pick<Store, 'markSeen'>,
    private readonly log: Logger,
  ) {}

  /** Records a state; for one id the newest time wins (markSeen also never moves backwards). */
  record(id: string, at: number, online: boolean): void {
    const prev = this.pending.get(id);
    if (!prev || at >= prev.at) this.pending.set(id, { at, online });
  }

  async flush(): Promise<void> {
    if (this.flushing) await this.flushing;
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    const entries = [...batch].map(([deviceId, e]) => ({ deviceId, at: new Date(e.at), online: e.online }));
    this.flushing = this.store.markSeen(entries).then(
      () => undefined,
      (e: unknown) => {
        this.log.warn({ err: e, entries: entries.length }, 'presence update failed; retrying at the next flush');
        for (const [id, entry] of batch) this.record(id, entry.at, entry.online);
      },
    );
    try {
      await this.flushing;
    } finally {
      this.flushing = null;
    }
  }
}
