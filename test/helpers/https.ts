/** Raw HTTPS requests for tests: any method, headers, body; never throws on HTTP status. */
import { request } from 'node:https';
import { connect as tlsConnect } from 'node:tls';

export interface HttpsResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json<T = { code?: string; message?: string }>(): T;
}

export function httpsRequest(
  url: string,
  opts: {
    method?: string;
    headers?: Record<string, string | number>;
    body?: string | Buffer;
    ca: string;
    cert?: string;
    key?: string;
    timeoutMs?: number;
  },
): Promise<HttpsResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: opts.method ?? 'GET',
        headers: opts.headers ?? {},
        ca: opts.ca,
        ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}),
        timeout: opts.timeoutMs ?? 30_000,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            json: <T>() => JSON.parse(body.toString('utf8')) as T,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/**
 * Sends raw bytes over TLS and collects whatever comes back until the server closes (for slow
 * bodies and malformed HTTP). `chunks` are written `gapMs` apart.
 */
export function rawTls(
  host: string,
  port: number,
  ca: string,
  chunks: (string | Buffer)[],
  gapMs: number,
  maxWaitMs = 30_000,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host, port, ca, servername: 'localhost' });
    let received = '';
    const deadline = setTimeout(() => {
      socket.destroy();
      resolve(received);
    }, maxWaitMs);
    socket.on('data', (d) => {
      received += d.toString('latin1');
    });
    socket.on('close', () => {
      clearTimeout(deadline);
      resolve(received);
    });
    socket.on('error', (e) => {
      clearTimeout(deadline);
      if (received) resolve(received);
      else reject(e);
    });
    socket.once('secureConnect', async () => {
      for (const c of chunks) {
        if (socket.destroyed) break;
        socket.write(c);
        await new Promise((r) => setTimeout(r, gapMs));
      }
    });
  });
}
