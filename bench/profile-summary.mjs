// Summarizes a V8 .cpuprofile (from `--cpu-prof`, e.g. bench/connect-ruler.mjs --node-args=...):
// self time by module (an npm package, a file of server/dist, node's internals, GC, native) and
// the top functions by self and by inclusive time, as shares of the busy (non-idle) samples.
//   node bench/profile-summary.mjs FILE.cpuprofile [--top 40] [--match REGEX]
// --match lists the inclusive time of every function whose name or file matches.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '40' }, match: { type: 'string' } },
});
const profile = JSON.parse(readFileSync(positionals[0], 'utf8'));
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map();
for (const id of profile.samples) self.set(id, (self.get(id) ?? 0) + 1);

function where(n) {
  const { url, functionName } = n.callFrame;
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  const dist = /server\/dist\/(.+)$/.exec(url);
  if (dist) return `server/${dist[1]}`;
  if (url.startsWith('node:')) return url;
  return url.replace(/^file:\/\//, '');
}
const label = (n) => `${n.callFrame.functionName || '(anonymous)'} ${where(n)}:${n.callFrame.lineNumber + 1}`;

const IDLE = new Set(['(idle)', '(program)']);
let busy = 0;
const byModule = new Map();
const bySelf = new Map();
const inclusive = new Map();
for (const [id, count] of self) {
  const n = nodes.get(id);
  if (IDLE.has(n.callFrame.functionName)) continue;
  busy += count;
  byModule.set(where(n), (byModule.get(where(n)) ?? 0) + count);
  bySelf.set(label(n), (bySelf.get(label(n)) ?? 0) + count);
  // Inclusive: count each distinct function once per sample's stack (recursion not double-counted).
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const l = label(nodes.get(cur));
    if (seen.has(l)) continue;
    seen.add(l);
    inclusive.set(l, (inclusive.get(l) ?? 0) + count);
  }
}
const pct = (c) => `${((100 * c) / busy).toFixed(1).padStart(5)} %`;
const top = (m, k) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, k)
    .map(([name, c]) => `${pct(c)}  ${name}`)
    .join('\n');
const k = Number(o.top);
console.log(`busy samples: ${busy}\n\n== self time by module\n${top(byModule, k)}`);
console.log(`\n== self time by function\n${top(bySelf, k)}`);
console.log(`\n== inclusive time by function\n${top(inclusive, k)}`);
if (o.match) {
  const re = new RegExp(o.match);
  console.log(`\n== inclusive, matching ${re}\n${top(new Map([...inclusive].filter(([l]) => re.test(l))), 200)}`);
}
