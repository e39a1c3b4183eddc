/**
 * The Redis server for cluster tests (REDIS_URL, default redis://127.0.0.1:6379), spoken to in
 * raw RESP so tests need no client library. Each test run uses its own key prefix and removes its
 * keys afterwards. Locally an unreachable Redis skips those tests with a loud warning; in CI
 * (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1) it fails them.
 */
import { connect } from 'node:net';

export const TEST_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function resp(args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

/** Sends one command, resolves with the raw reply (first chunk). */
export function redisCommand(args: string[], url = TEST_REDIS_URL, timeoutMs = 3_000): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: u.hostname, port: Number(u.port || 6379) });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`Redis at ${u.host}: no answer in ${timeoutMs} ms`));
    }, timeoutMs);
    let reply = '';
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('connect', () => {
      const db = u.pathname.replace('/', '');
      s.write((db ? resp(['SELECT', db]) : '') + resp(args));
    });
    s.on('data', (d) => {
      reply += d.toString('utf8');
      const lines = reply.split('\r\n');
      if (lines.length > (db(u) ? 2 : 1)) {
        clearTimeout(timer);
        s.end();
        resolve(db(u) ? reply.slice(reply.indexOf('\r\n') + 2) : reply);
      }
    });
  });
}

const db = (u: URL) => u.pathname.replace('/', '') !== '';

let available: Promise<boolean> | undefined;

export function redisAvailable(): Promise<boolean> {
  available ??= redisCommand(['PING']).then(
    (r) => {
      if (!r.startsWith('+PONG')) throw new Error(`unexpected PING reply ${JSON.stringify(r)}`);
      return true;
    },
    (e: Error) => {
      if (process.env.FLEETGATE_REQUIRE_SYSTEM_TOOLS === '1') {
        throw new Error(
          `Redis at ${TEST_REDIS_URL} is required (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1) but unreachable: ${e.message}`,
        );
      }
      console.warn(
        `\n!!! Redis at ${TEST_REDIS_URL} is unreachable (${e.message}): cluster tests are SKIPPED here (CI runs them) !!!\n`,
      );
      return false;
    },
  );
  return available;
}

/** Deletes every key under `prefix` (a test run's own). */
export async function deleteRedisPrefix(prefix: string): Promise<void> {
  const script = "local n=0 for _,k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n=n+1 end return n";
  await redisCommand(['EVAL', script, '0', `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`]);
}
