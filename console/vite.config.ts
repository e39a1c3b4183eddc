// Vite build of the console: hashed files under dist/assets, served by the API at /console/.
// No inline script or style may be emitted (the API's CSP refuses them): the module preload
// polyfill would be inline-free too, but every browser we target has modulepreload natively.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/console/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    modulePreload: { polyfill: false },
    // Never inline assets as data: URIs into JS or CSS: keeps the CSP's img-src honest.
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
});
