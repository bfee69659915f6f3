import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { autoV2, baseWeightShapes, contentHash, fileSha256, readAdapterFile, writeAdapterFile, type AdapterContent } from '../../src/main/core/adapters/format';
import { readSafetensors, writeSafetensors } from '../../src/main/core/io/safetensors';
import { makeCore, tempDir } from './helpers';

const RESOURCES = resolve('resources');
const WEIGHTS = join(RESOURCES, 'models', 'clipart-64', 'model.safetensors');
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** Two real attention projections of the built-in model, so base-shape checks pass. */
function layers(): { name: string; shape: number[] }[] {
  const shapes = baseWeightShapes(WEIGHTS);
  return [...shapes]
    .filter(([k]) => /attn1\.to_(q|k)\.weight$/.test(k))
    .slice(0, 2)
    .map(([k, shape]) => ({ name: k.slice(0, -'.weight'.length), shape }));
}

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Random f16 values that are all finite: bit 6 of each high byte cleared keeps the exponent below all-ones. */
function finiteF16(b: Uint8Array): Uint8Array {
  for (let i = 1; i < b.length; i += 2) b[i]! &= 0xbf;
  return b;
}

/** A SHiRA adapter in the v2 container; the index blob is opaque here (the worker decodes it). */
function shiraContent(seed = 1, index: 'rice' | 'struct' = 'rice'): AdapterContent {
  return {
    kind: 'shira',
    baseIdentity: '',
    methodJson: JSON.stringify({ method: 'shira', mask: index === 'struct' ? 'struct' : 'wm', density: 0.02, seed }),
    tensors: layers().map((l, i) => ({
      name: l.name,
      shape: l.shape,
      maskKind: index === 'struct' ? 'struct' : 'wm',
      encoding: `f16+${index}`,
      meta: { k: 40, checksum: (seed * 7919 + i).toString(16).padStart(16, '0'), ...(index === 'rice' ? { rice_k: 5 } : {}) },
      values: finiteF16(bytes(80, seed * 31 + i)),
      index: index === 'rice' ? bytes(33, seed * 17 + i) : null,
    })),
  };
}

function loraContent(seed = 2): AdapterContent {
  return {
    kind: 'lora',
    baseIdentity: '',
    methodJson: JSON.stringify({ method: 'lora', rank: 2, alpha: 2 }),
    tensors: layers().map((l, i) => ({
      name: l.name,
      shape: l.shape,
      maskKind: null,
      encoding: 'lora-f16',
      meta: { a_shape: [2, l.shape[1]!], b_shape: [l.shape[0]!, 2], alpha: 2 },
      values: finiteF16(bytes(2 * l.shape[1]! * 2, seed + i)),
      index: finiteF16(bytes(l.shape[0]! * 2 * 2, seed + 10 + i)),
    })),
  };
}

function counts(db: import('better-sqlite3').Database) {
  return db.prepare('SELECT (SELECT count(*) FROM adapters) AS adapters, (SELECT count(*) FROM adapter_tensors) AS tensors, (SELECT count(*) FROM adapter_tags) AS tags').get();
}

describe('adapter file format (container side)', () => {
  it('round-trips SHiRA and LoRA content and writes the same bytes for the same content', () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    for (const content of [shiraContent(), shiraContent(3, 'struct'), loraContent()]) {
      const a = join(dir.path, 'a.safetensors');
      const b = join(dir.path, 'b.safetensors');
      writeAdapterFile(a, content);
      const back = readAdapterFile(a);
      expect(back.kind).toBe(content.kind);
      expect(back.tensors.map((t) => [t.name, t.encoding, t.meta, Buffer.from(t.values).toString('hex'), t.index && Buffer.from(t.index).toString('hex')])).toEqual(
        content.tensors.map((t) => [t.name, t.encoding, t.meta, Buffer.from(t.values).toString('hex'), t.index && Buffer.from(t.index).toString('hex')]),
      );
      writeAdapterFile(b, back);
      expect(fileSha256(b)).toBe(fileSha256(a));
      expect(contentHash(back)).toBe(contentHash(content));
    }
  });

  it('content hash follows values and index checksums, not the index encoding', () => {
    const rice = shiraContent(5, 'rice');
    const implicit: AdapterContent = { ...rice, tensors: rice.tensors.map((t) => ({ ...t, encoding: 'f16+struct', index: null, meta: { k: t.meta.k, checksum: t.meta.checksum } })) };
    expect(contentHash(implicit)).toBe(contentHash(rice));
    const changed = { ...rice, tensors: rice.tensors.map((t, i) => (i === 0 ? { ...t, values: Uint8Array.from(t.values, (v, j) => (j === 0 ? v ^ 1 : v)) } : t)) };
    expect(contentHash(changed)).not.toBe(contentHash(rice));
  });

  it('names what is wrong with a malformed file', () => {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const good = join(dir.path, 'good.safetensors');
    writeAdapterFile(good, shiraContent());
    const file = readSafetensors(good);
    const variant = (name: string, edit: (m: Record<string, string>, t: typeof file.tensors) => void) => {
      const m = { ...file.metadata };
      const t = new Map(file.tensors);
      edit(m, t);
      const p = join(dir.path, `${name}.safetensors`);
      writeSafetensors(p, t, m);
      return p;
    };
    const [l0] = layers();
    expect(() => readAdapterFile(variant('kind', (m) => (m.kind = 'dora')))).toThrow(/kind must be "shira" or "lora"/);
    expect(() => readAdapterFile(variant('version', (m) => (m.format_version = '9')))).toThrow(/format version "9" is not supported/);
    expect(() => readAdapterFile(variant('missing', (_, t) => t.delete(`${l0!.name}.values`)))).toThrow(new RegExp(`tensor "${l0!.name}.values" is missing`));
    expect(() => readAdapterFile(variant('extra', (_, t) => t.set('evil.payload', { dtype: 'U8', shape: [1], data: new Uint8Array(1) })))).toThrow(/does not belong to any layer/);
    expect(() =>
      readAdapterFile(
        variant('path', (m, t) => {
          const e = JSON.parse(m.tensors!) as Record<string, unknown>;
          e['../../etc/passwd'] = e[l0!.name];
          delete e[l0!.name];
          m.tensors = JSON.stringify(e);
          t.set('../../etc/passwd.values', t.get(`${l0!.name}.values`)!);
          t.set('../../etc/passwd.index', t.get(`${l0!.name}.index`)!);
          t.delete(`${l0!.name}.values`);
          t.delete(`${l0!.name}.index`);
        }),
      ),
    ).toThrow(/is not a dotted module path/);
    const truncated = join(dir.path, 'truncated.safetensors');
    writeFileSync(truncated, readFileSync(good).subarray(0, readFileSync(good).length - 10));
    expect(() => readAdapterFile(truncated)).toThrow(/not a readable safetensors file .*truncated/);
  });
});

describe('adapter library', () => {
  it('stores, searches, edits, duplicates and deletes adapters with their tensors in one transaction', async () => {
    const { core, call, cleanup } = makeCore({ resourcesDir: RESOURCES });
    cleanups.push(cleanup);
    const base = (await call('models.list', {}))[0]!;
    const ink = core.adapters.insert(shiraContent(1), { name: 'Ink outlines', baseModelId: base.id, triggerWords: ['inkfx'], tags: ['lineart', 'bw'] });
    const neon = core.adapters.insert(loraContent(2), { name: 'Neon 100%', baseModelId: base.id, triggerWords: ['neonfx'], tags: ['glow'] });

    const all = await call('adapters.list', {});
    expect(all.map((a) => a.name).sort()).toEqual(['Ink outlines', 'Neon 100%']);
    const inkRow = all.find((a) => a.id === ink)!;
    expect(inkRow).toMatchObject({ kind: 'shira', triggerWords: ['inkfx'], tags: ['bw', 'lineart'], baseModelName: base.name, baseWeightsHash: base.weightsHash, trainable: 80 });
    // 2 × (80 value bytes + 33 index bytes) for 80 trained values
    expect(inkRow.sizeBytes).toBe(226);
    expect(inkRow.bytesPerValue).toBeCloseTo(226 / 80);
    expect(inkRow.autoV2).toBe(inkRow.fileSha256!.slice(0, 10).toUpperCase());
    expect(inkRow.contentHash).toBe(contentHash(shiraContent(1)));
    expect((await call('adapters.list', { kind: 'lora' })).map((a) => a.name)).toEqual(['Neon 100%']);
    expect((await call('adapters.list', { query: 'lineart' })).map((a) => a.name)).toEqual(['Ink outlines']);
    expect((await call('adapters.list', { query: 'neonfx' })).map((a) => a.name)).toEqual(['Neon 100%']);
    expect((await call('adapters.list', { query: '100%' })).map((a) => a.name)).toEqual(['Neon 100%']);
    expect(await call('adapters.list', { query: '_' })).toEqual([]);
    expect((await call('adapters.list', { tag: 'glow' })).map((a) => a.id)).toEqual([neon]);
    expect((await call('adapters.list', { sort: 'name' })).map((a) => a.name)).toEqual(['Ink outlines', 'Neon 100%']);

    const edited = await call('adapters.update', { id: ink, name: 'Ink v2', tags: ['ink', 'ink', 'bw'], notes: 'thin lines', triggerWords: ['inkfx', 'lines'], preferredWeight: 0.8 });
    expect(edited).toMatchObject({ name: 'Ink v2', tags: ['bw', 'ink'], notes: 'thin lines', triggerWords: ['inkfx', 'lines'], preferredWeight: 0.8 });
    await expect(call('adapters.update', { id: ink, coverGenerationId: 999 })).rejects.toMatchObject({ type: 'not_found' });
    await expect(call('adapters.update', { id: ink, preferredWeight: 9 })).rejects.toMatchObject({ type: 'bad_input' });

    const copy = await call('adapters.duplicate', { id: ink });
    expect(copy).toMatchObject({ name: 'Ink v2 (copy)', tags: ['bw', 'ink'], contentHash: edited.contentHash, sizeBytes: edited.sizeBytes });
    const detail = await call('adapters.get', { id: copy.id });
    expect(detail.tensors.map((t) => [t.name, t.encoding, t.k])).toEqual(layers().map((l) => [l.name, 'f16+rice', 40]));

    const before = counts(core.db) as { adapters: number; tensors: number };
    expect(await call('adapters.delete', { id: copy.id })).toEqual({ deleted: true });
    expect(counts(core.db)).toMatchObject({ adapters: before.adapters - 1, tensors: before.tensors - 2 });
    // The original shares the cache file, so it is still there; deleting the last user removes it.
    const cache = core.adapters.cacheFile(ink).path;
    expect(existsSync(cache)).toBe(true);
    await call('adapters.delete', { id: ink });
    expect(existsSync(cache)).toBe(false);
    expect((core.db.prepare('SELECT count(*) AS n FROM adapter_tensors WHERE adapter_id = ?').get(ink) as { n: number }).n).toBe(0);
    expect(await call('adapters.delete', { id: ink })).toEqual({ deleted: false });
    expect((await call('app.health', {})).ok).toBe(true);
  });

  it('exports a package and imports it into another library bit for bit; bad packages change nothing', async () => {
    const a = makeCore({ resourcesDir: RESOURCES });
    const b = makeCore({ resourcesDir: RESOURCES });
    const out = tempDir();
    cleanups.push(a.cleanup, b.cleanup, out.cleanup);
    const base = (await a.call('models.list', {}))[0]!;
    const id = a.core.adapters.insert(shiraContent(4), { name: 'Watercolour wash', baseModelId: base.id, triggerWords: ['wcfx'], tags: ['paint'], notes: 'soft edges' });
    const exported = await a.call('adapters.export', { id, dir: out.path });
    expect(readdirSync(out.path).sort()).toEqual(['Watercolour-wash.safetensors', 'Watercolour-wash.shira.json']);
    expect(exported.sha256).toBe(fileSha256(exported.file));
    expect(exported.autoV2).toBe(autoV2(exported.sha256));
    const stored = (await a.call('adapters.list', {}))[0]!;
    expect(stored.fileSha256).toBe(exported.sha256);
    // The exported file carries the base model's identity.
    expect(readSafetensors(exported.file).metadata.base_identity).toBe(base.weightsHash);

    const imported = await b.call('adapters.import', { path: exported.file });
    expect(imported).toMatchObject({ name: 'Watercolour wash', triggerWords: ['wcfx'], tags: ['paint'], notes: 'soft edges', contentHash: stored.contentHash, fileSha256: stored.fileSha256 });
    await expect(b.call('adapters.import', { path: exported.file })).rejects.toMatchObject({ type: 'conflict', message: expect.stringMatching(/already in the library as "Watercolour wash"/) });

    const before = counts(b.core.db);
    const bad = (name: string, data: Buffer | string) => {
      const p = join(out.path, name);
      writeFileSync(p, data);
      return p;
    };
    const original = readFileSync(exported.file);
    const expectRejected = async (path: string, pattern: RegExp) => {
      await expect(b.call('adapters.import', { path })).rejects.toMatchObject({ type: 'bad_input', message: expect.stringMatching(pattern) });
      expect(counts(b.core.db)).toEqual(before);
    };
    await expectRejected(bad('cut.safetensors', original.subarray(0, original.length - 7)), /not a readable safetensors file/);
    await expectRejected(bad('empty.safetensors', ''), /not a readable safetensors file/);
    await expectRejected(bad('notes.txt', 'hello'), /choose the .safetensors file/);
    await expectRejected(join(out.path, 'nope.safetensors'), /does not exist/);
    // A sidecar that describes another file.
    bad('swapped.safetensors', original);
    bad('swapped.shira.json', JSON.stringify({ ...JSON.parse(readFileSync(exported.sidecar, 'utf8')), fileSha256: '0'.repeat(64) }));
    await expectRejected(join(out.path, 'swapped.safetensors'), /does not match swapped.shira.json/);
    // Trained on weights this library does not have.
    const foreign = join(out.path, 'foreign.safetensors');
    writeAdapterFile(foreign, { ...shiraContent(6), baseIdentity: 'ab'.repeat(32) });
    await expectRejected(foreign, /trained on a base model this library does not have \(weights abababababab/);
    // Shapes of another architecture.
    const c = shiraContent(7);
    const wrong = join(out.path, 'wrong.safetensors');
    writeAdapterFile(wrong, { ...c, tensors: c.tensors.map((t) => ({ ...t, shape: [t.shape[0]! + 1, t.shape[1]!] })) });
    await expectRejected(wrong, /has shape .* but "clipart-64" has/);
    const ghost = join(out.path, 'ghost.safetensors');
    writeAdapterFile(ghost, { ...c, tensors: c.tensors.map((t) => ({ ...t, name: `${t.name}_x` })) });
    await expectRejected(ghost, /does not exist in base model "clipart-64"/);
    expect((await b.call('app.health', {})).ok).toBe(true);
  });
});
