import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real sockets, real databases, real openssl: generous timeouts, never wall-time assertions.
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // 2-core machines: keep parallelism modest so servers and openssl children are not starved.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
