import { afterEach, describe, expect, it } from 'vitest';
import { makeCore } from './helpers';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('adapters.list', () => {
  it('lists an empty library, then filters by kind and searches names, tags and trigger words', async () => {
    const { core, call, cleanup } = makeCore();
    cleanups.push(cleanup);
    expect(await call('adapters.list', {})).toEqual([]);
    const db = core.db;
    const add = (name: string, kind: string, triggers: string[], tags: string[]) => {
      const id = Number(db.prepare('INSERT INTO adapters (name, kind, trigger_words, method_json) VALUES (?, ?, ?, ?)').run(name, kind, JSON.stringify(triggers), JSON.stringify({ mask: 'rand' })).lastInsertRowid);
      for (const t of tags) db.prepare('INSERT INTO adapter_tags (adapter_id, tag) VALUES (?, ?)').run(id, t);
      return id;
    };
    const ink = add('Ink outlines', 'shira', ['inkfx'], ['lineart', 'bw']);
    add('Neon 100%', 'lora', ['neonfx'], ['glow']);
    db.prepare("INSERT INTO adapter_tensors (adapter_id, name, shape_json, encoding, values_blob, index_blob) VALUES (?, 'w', '[4,4]', 'f16', x'00000000', x'0102')").run(ink);
    const all = await call('adapters.list', {});
    expect(all.map((a) => a.name).sort()).toEqual(['Ink outlines', 'Neon 100%']);
    const inkRow = all.find((a) => a.id === ink)!;
    expect(inkRow).toMatchObject({ kind: 'shira', triggerWords: ['inkfx'], tags: ['bw', 'lineart'], sizeBytes: 6, method: { mask: 'rand' } });
    expect((await call('adapters.list', { kind: 'lora' })).map((a) => a.name)).toEqual(['Neon 100%']);
    expect((await call('adapters.list', { query: 'lineart' })).map((a) => a.name)).toEqual(['Ink outlines']);
    expect((await call('adapters.list', { query: 'neonfx' })).map((a) => a.name)).toEqual(['Neon 100%']);
    // LIKE wildcards in the query are literal characters.
    expect((await call('adapters.list', { query: '100%' })).map((a) => a.name)).toEqual(['Neon 100%']);
    expect(await call('adapters.list', { query: '_' })).toEqual([]);
    expect(await call('adapters.list', { query: 'ink', kind: 'lora' })).toEqual([]);
  });
});
