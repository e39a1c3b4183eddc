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
    // A fresh TMPDIR per run, checked empty at the end: a leak fails the run (test/global-setup.ts).
    globalSetup: ['test/global-setup.ts'],
    setupFiles: ['test/setup.ts'],
    // After-hooks in reverse order of registration: test/setup.ts's cleanup runs after the file's own.
    sequence: { hooks: 'stack' },
  },
});
