/**
 * @peculiar/x509 v2 resolves its algorithm registry through tsyringe, which refuses to load
 * unless a Reflect metadata API exists ("tsyringe requires a reflect polyfill"). This is the
 * smallest implementation of the part of that API tsyringe and tslib's __metadata use
 * (defineMetadata, getMetadata, getOwnMetadata, hasMetadata, metadata), installed only when no
 * other polyfill (reflect-metadata, core-js) is present. Import it through ./x509.js, never
 * directly, so it always runs before @peculiar/x509 is evaluated.
 */
type Key = unknown;
type Target = object;

const store = new WeakMap<Target, Map<PropertyKey | undefined, Map<Key, unknown>>>();

function bucket(target: Target, property: PropertyKey | undefined, create: boolean): Map<Key, unknown> | undefined {
  let byProperty = store.get(target);
  if (!byProperty) {
    if (!create) return undefined;
    byProperty = new Map();
    store.set(target, byProperty);
  }
  let values = byProperty.get(property);
  if (!values && create) {
    values = new Map();
    byProperty.set(property, values);
  }
  return values;
}

interface ReflectMetadataApi {
  defineMetadata(key: Key, value: unknown, target: Target, property?: PropertyKey): void;
  getOwnMetadata(key: Key, target: Target, property?: PropertyKey): unknown;
  getMetadata(key: Key, target: Target, property?: PropertyKey): unknown;
  hasMetadata(key: Key, target: Target, property?: PropertyKey): boolean;
  metadata(key: Key, value: unknown): (target: Target, property?: PropertyKey) => void;
}

const api: ReflectMetadataApi = {
  defineMetadata(key, value, target, property) {
    bucket(target, property, true)!.set(key, value);
  },
  getOwnMetadata(key, target, property) {
    return bucket(target, property, false)?.get(key);
  },
  getMetadata(key, target, property) {
    for (let t: Target | null = target; t !== null; t = Object.getPrototypeOf(t) as Target | null) {
      const values = bucket(t, property, false);
      if (values?.has(key)) return values.get(key);
    }
    return undefined;
  },
  hasMetadata(key, target, property) {
    return api.getMetadata(key, target, property) !== undefined;
  },
  metadata(key, value) {
    return (target, property) => api.defineMetadata(key, value, target, property);
  },
};

const reflect = Reflect as unknown as Partial<ReflectMetadataApi>;
if (typeof reflect.getMetadata !== 'function') {
  for (const [name, fn] of Object.entries(api)) {
    Object.defineProperty(Reflect, name, { value: fn, writable: true, configurable: true, enumerable: false });
  }
}
