// Summarizes what N idle connections keep in a V8 heap (issue 13 item 4): two .heapsnapshot files of
// the same broker process, BEFORE the connections opened and WHILE they are held (e.g. from
// bench/connect-ruler.mjs --idle N --heap-snapshots DIR), compared by constructor:
//   - count and self size added per connection (after - before, divided by N);
//   - retained size per connection of each constructor whose instances grew by about N or more
//     (dominator tree of the AFTER snapshot, weak edges ignored as DevTools does; an object's
//     retained size is what a GC would free with it, so nested ones are not summed twice in the
//     "top level" line, which only counts objects not dominated by another counted one).
//   node bench/heap-summary.mjs BEFORE.heapsnapshot AFTER.heapsnapshot --per 1000 [--top 30]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: { per: { type: 'string', default: '1000' }, top: { type: 'string', default: '30' } },
});
const per = Number(o.per);
const top = Number(o.top);

function load(file) {
  const s = JSON.parse(readFileSync(file, 'utf8'));
  const m = s.snapshot.meta;
  const nf = m.node_fields.length;
  const ef = m.edge_fields.length;
  const nodeTypes = m.node_types[0];
  const edgeTypes = m.edge_types[0];
  const f = (name) => m.node_fields.indexOf(name);
  const [T, N, S, EC] = [f('type'), f('name'), f('self_size'), f('edge_count')];
  const count = s.nodes.length / nf;
  const firstEdge = new Uint32Array(count + 1);
  for (let i = 0, e = 0; i < count; i++) {
    firstEdge[i] = e;
    e += s.nodes[i * nf + EC] * ef;
  }
  firstEdge[count] = s.edges.length;
  const weak = edgeTypes.indexOf('weak');
  const label = (i) => {
    const type = nodeTypes[s.nodes[i * nf + T]];
    const name = s.strings[s.nodes[i * nf + N]];
    // Group the way DevTools' "Constructor" column does.
    if (type === 'object' || type === 'native') return name;
    if (type === 'closure') return '(closure)';
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string') return '(string)';
    return `(${type})`;
  };
  return { s, nf, ef, count, firstEdge, weak, label, selfOf: (i) => s.nodes[i * nf + S] };
}

function byConstructor(h) {
  const out = new Map();
  for (let i = 0; i < h.count; i++) {
    const k = h.label(i);
    const x = out.get(k) ?? { n: 0, self: 0 };
    x.n++;
    x.self += h.selfOf(i);
    out.set(k, x);
  }
  return out;
}

/** Immediate dominators (Cooper, Harvey, Kennedy: "A Simple, Fast Dominance Algorithm"). */
function dominators(h) {
  const { s, count, firstEdge, ef, nf, weak } = h;
  const post = new Int32Array(count).fill(-1);
  const order = new Int32Array(count);
  const preds = Array.from({ length: count }, () => []);
  const stack = [0];
  const edgeAt = new Uint32Array(count);
  for (let i = 0; i < count; i++) edgeAt[i] = firstEdge[i];
  const seen = new Uint8Array(count);
  seen[0] = 1;
  let n = 0;
  while (stack.length) {
    const v = stack[stack.length - 1];
    if (edgeAt[v] < firstEdge[v + 1]) {
      const e = edgeAt[v];
      edgeAt[v] += ef;
      if (s.edges[e] === weak) continue;
      const w = s.edges[e + 2] / nf;
      preds[w].push(v);
      if (!seen[w]) {
        seen[w] = 1;
        stack.push(w);
      }
    } else {
      stack.pop();
      post[v] = n;
      order[n++] = v;
    }
  }
  const idom = new Int32Array(count).fill(-1);
  idom[0] = 0;
  const intersect = (a, b) => {
    while (a !== b) {
      while (post[a] < post[b]) a = idom[a];
      while (post[b] < post[a]) b = idom[b];
    }
    return a;
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (let k = n - 2; k >= 0; k--) {
      const v = order[k];
      let d = -1;
      for (const p of preds[v]) if (idom[p] !== -1) d = d === -1 ? p : intersect(p, d);
      if (d !== -1 && idom[v] !== d) {
        idom[v] = d;
        changed = true;
      }
    }
  }
  const retained = new Float64Array(count);
  for (let k = 0; k < n; k++) {
    const v = order[k];
    retained[v] += h.selfOf(v);
    if (v !== 0) retained[idom[v]] += retained[v];
  }
  return { idom, retained, reachable: n };
}

const [before, after] = positionals.map(load);
const cb = byConstructor(before);
const ca = byConstructor(after);
const rows = [];
for (const [k, x] of ca) {
  const y = cb.get(k) ?? { n: 0, self: 0 };
  rows.push({ k, n: (x.n - y.n) / per, self: (x.self - y.self) / per });
}
rows.sort((a, b) => b.self - a.self);
const total = rows.reduce((t, r) => t + r.self, 0);
console.log(`heap growth per connection (self sizes, after - before, / ${per}): ${(total / 1024).toFixed(2)} KiB`);
console.log('objects/conn  self B/conn  constructor');
for (const r of rows.slice(0, top)) {
  console.log(`${r.n.toFixed(2).padStart(12)} ${r.self.toFixed(0).padStart(12)}  ${r.k}`);
}

// Retained size per connection of the constructors that grew by about one per connection or more.
const { retained } = dominators(after);
const grown = new Set(rows.filter((r) => r.n >= 0.9 && r.k[0] !== '(').map((r) => r.k));
const ret = new Map();
for (let i = 0; i < after.count; i++) {
  const k = after.label(i);
  if (!grown.has(k)) continue;
  const x = ret.get(k) ?? { n: 0, retained: 0 };
  x.n++;
  x.retained += retained[i];
  ret.set(k, x);
}
const retRows = [...ret].map(([k, x]) => ({ k, n: x.n / per, retained: x.retained / per }));
retRows.sort((a, b) => b.retained - a.retained);
console.log('\nretained size of the constructors that grew by >= 0.9 per connection (AFTER snapshot, / N):');
console.log('objects/conn  retained B/conn  constructor');
for (const r of retRows.slice(0, top)) {
  console.log(`${r.n.toFixed(2).padStart(12)} ${r.retained.toFixed(0).padStart(16)}  ${r.k}`);
}
