/**
 * A seeded generator of malformed JSON LLB definitions for the fuzz tests:
 * valid definitions (llb-examples/*.json and test/fixtures/llb) mutated
 * structurally — wrong types, huge, negative and fractional numbers, deleted,
 * repeated and prototype-named keys, deep nesting, long and odd Unicode
 * strings, cycles and dangling references — and then, sometimes, broken as
 * text (truncated, a key written twice, a stray byte).
 */
import { readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';

const REPO = new URL('../../../../', import.meta.url);

/** The valid definitions mutations start from, parsed. */
export const SEEDS: readonly unknown[] = [
  ...readdirSync(new URL('llb-examples/', REPO))
    .filter((f) => f.endsWith('.json'))
    .map((f) => new URL(`llb-examples/${f}`, REPO)),
  new URL('test/fixtures/llb/full.json', REPO),
].map((url) => JSON.parse(readFileSync(url, 'utf8')) as unknown);

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const PROTOTYPE_NAMES = Object.getOwnPropertyNames(Object.prototype);

/** Keys worth writing where a key is expected: the schema's own, prototype names, odd ones. */
const keyArb: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...PROTOTYPE_NAMES),
  fc.constantFrom('version', 'ops', 'result', 'inputs', 'output', 'input', 'path', 'data', 'mounts', 'actions', 'meta', 'args', 'uid', 'hostname'),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 8 }),
);

/** Numbers that size work or reach the kernel: huge, negative, fractional, not safe integers. */
const numberArb: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(-1, 0, 1, 2, -2, 0.5, -0, 2 ** 31, 2 ** 32, 2 ** 32 - 1, 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 1e308, -1e308, 4294967295),
  fc.integer({ min: -1000, max: 1000 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);

/** Strings: empty, long, control characters, any Unicode, lone surrogates, prototype names. */
const stringArb: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('', '/', '..', '/../../etc', 'x\u0000y', '\ud800', 'a\udc00b', '💥', 'docker-image://', 'local://', '0755', '-1', '1e999'),
  fc.constantFrom(...PROTOTYPE_NAMES),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.integer({ min: 1, max: 200_000 }).map((n) => 'x'.repeat(n)),
);

/**
 * Arrays or objects nested `depth` deep, as a marker string that becomes the
 * nested text after JSON.stringify (which would itself overflow the stack on
 * the deepest).
 */
const deepArb: fc.Arbitrary<Json> = fc
  .tuple(fc.integer({ min: 10, max: 50_000 }), fc.boolean())
  .map(([depth, objects]) => `${DEEP}${depth}:${objects ? 'o' : 'a'}`);
const DEEP = 'fuzz-deep:';
const DEEP_RE = /"fuzz-deep:(\d+):([oa])"/g;

function expandDeep(text: string): string {
  return text.replace(DEEP_RE, (_, depth: string, kind: string) =>
    kind === 'o' ? `${'{"a":'.repeat(Number(depth))}{}${'}'.repeat(Number(depth))}` : `${'['.repeat(Number(depth))}${']'.repeat(Number(depth))}`,
  );
}

const valueArb: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom<Json>(null, true, false, {}, [], [null], { op: 'a', output: 0 }),
  numberArb,
  stringArb,
  deepArb,
  fc.array(numberArb, { maxLength: 4 }),
  fc.dictionary(keyArb, stringArb, { maxKeys: 3 }),
);

/** One structural change at the node picked by `at` (an index into every node, taken modulo). */
interface Mutation {
  readonly at: number;
  readonly kind: 'replace' | 'delete' | 'add' | 'rename' | 'duplicate' | 'reference';
  readonly key: string;
  readonly value: Json;
}

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  kind: fc.constantFrom('replace', 'delete', 'add', 'rename', 'duplicate', 'reference'),
  key: keyArb,
  value: valueArb,
});

/** A change to the JSON text after the structural ones. */
type TextMutation = { readonly kind: 'none' } | { readonly kind: 'truncate' | 'repeat-key' | 'stray'; readonly at: number; readonly text: string };

const textMutationArb: fc.Arbitrary<TextMutation> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<TextMutation>({ kind: 'none' }) },
  fc.record({ kind: fc.constantFrom('truncate', 'repeat-key', 'stray'), at: fc.nat(), text: fc.constantFrom(',', '}', ']', '"', '\\', 'x', '\u0001', '/*', '\ud800') }),
);

/** A container in the tree and a way to reach its parent's slot, for mutations. */
interface Node {
  readonly value: Json;
  readonly set: (value: Json | undefined) => void;
}

/** Every node of `root` (the root itself cannot be deleted), breadth-first. */
function nodesOf(root: { doc: Json }): Node[] {
  const out: Node[] = [{ value: root.doc, set: (v) => (root.doc = v ?? null) }];
  for (let i = 0; i < out.length && out.length < 5000; i++) {
    const { value } = out[i] as Node;
    if (Array.isArray(value)) {
      value.forEach((child, k) =>
        out.push({
          value: child,
          set: (v) => (v === undefined ? value.splice(k, 1) : (value[k] = v)),
        }),
      );
    } else if (value !== null && typeof value === 'object') {
      for (const key of Object.keys(value)) {
        out.push({
          value: value[key] as Json,
          set: (v) => {
            if (v === undefined) delete value[key];
            else Object.defineProperty(value, key, { value: v, enumerable: true, writable: true, configurable: true });
          },
        });
      }
    }
  }
  return out;
}

/** The op names of a seed, for references that make cycles or dangle. */
function opNames(doc: Json): string[] {
  const ops = doc !== null && typeof doc === 'object' && !Array.isArray(doc) ? doc['ops'] : undefined;
  return ops !== null && typeof ops === 'object' && ops !== undefined && !Array.isArray(ops) ? Object.keys(ops) : [];
}

function define(obj: { [key: string]: Json }, key: string, value: Json): void {
  // defineProperty, so "__proto__" becomes a key rather than the prototype.
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function mutate(root: { doc: Json }, m: Mutation): void {
  const nodes = nodesOf(root);
  const node = nodes[m.at % nodes.length] as Node;
  const { value } = node;
  const isObject = value !== null && typeof value === 'object' && !Array.isArray(value);
  switch (m.kind) {
    case 'replace':
      // A copy: the same mutation may come twice (fast-check shares values), and inserting one value twice can make a cycle.
      node.set(structuredClone(m.value));
      return;
    case 'delete':
      if (node !== nodes[0]) node.set(undefined);
      return;
    case 'add':
      if (isObject) define(value, m.key, structuredClone(m.value));
      else if (Array.isArray(value)) value.push(structuredClone(m.value));
      return;
    case 'rename':
      if (isObject) {
        const from = Object.keys(value)[m.at % Math.max(1, Object.keys(value).length)];
        if (from !== undefined) {
          define(value, m.key, value[from] as Json);
          if (from !== m.key) delete value[from];
        }
      }
      return;
    case 'duplicate':
      if (Array.isArray(value) && value.length > 0) value.push(structuredClone(value[m.at % value.length] as Json));
      return;
    case 'reference': {
      // Point some op's inputs at an op (perhaps itself or a later one: a cycle) or at a name that is not there.
      const names = opNames(root.doc);
      const from = names[m.at % Math.max(1, names.length)];
      // No op names: the document (or its ops) was replaced, perhaps by null, by an earlier mutation.
      if (from === undefined) return;
      const ops = (root.doc as { ops: { [key: string]: Json } }).ops;
      const op = ops[from];
      const target = m.at % 3 === 0 ? m.key : (names[(m.at >> 2) % names.length] ?? m.key);
      if (op !== null && typeof op === 'object' && !Array.isArray(op)) define(op, 'inputs', [target]);
      return;
    }
  }
}

function mutateText(text: string, m: TextMutation): string {
  if (m.kind === 'none') return text;
  const at = m.at % (text.length + 1);
  if (m.kind === 'truncate') return text.slice(0, at);
  if (m.kind === 'stray') return `${text.slice(0, at)}${m.text}${text.slice(at)}`;
  // Write a key a second time: right after the first "{" at or after `at`.
  const brace = text.indexOf('{', at);
  return brace === -1 ? text : `${text.slice(0, brace + 1)}"version": 1, ${text.slice(brace + 1)}`;
}

/** A malformed definition as JSON text (valid now and then: mutations may cancel out). */
export const malformedDefinition: fc.Arbitrary<string> = fc
  .tuple(fc.nat(SEEDS.length - 1), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), textMutationArb)
  .map(([seed, mutations, textMutation]) => {
    const root = { doc: structuredClone(SEEDS[seed]) as Json };
    for (const m of mutations) mutate(root, m);
    return mutateText(expandDeep(JSON.stringify(root.doc)), textMutation);
  });
