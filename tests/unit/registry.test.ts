import { afterEach, describe, expect, it } from 'vitest';
import { api } from '../../src/shared/api';
import { ExpectedError } from '../../src/shared/errors';
import { ApiRegistry, type Handlers } from '../../src/main/core/registry';
import { makeCore } from './helpers';
import { LATEST_SCHEMA_VERSION } from '../../src/main/core/db/migrations';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('API registry', () => {
  it('has a handler for every method of the contract', () => {
    const { core, cleanup } = makeCore();
    cleanups.push(cleanup);
    expect(core.registry.methods().sort()).toEqual(Object.keys(api).sort());
  });

  it('refuses to start with a method missing', () => {
    expect(() => new ApiRegistry({} as Handlers, () => {})).toThrow(/without a handler: app\.info/);
  });

  it('answers an unknown method with a tagged error, not silence', async () => {
    const { core, cleanup } = makeCore();
    cleanups.push(cleanup);
    const outcome = await core.registry.dispatch('datasets.explode', {}, { client: 't' });
    expect(outcome).toEqual({ ok: false, error: { type: 'bad_input', message: 'Unknown API method "datasets.explode".', details: { method: 'datasets.explode' } } });
    // Prototype keys are not methods.
    expect((await core.registry.dispatch('toString', {}, { client: 't' })).ok).toBe(false);
  });

  it('validates input before the handler and names the offending field', async () => {
    const { core, cleanup } = makeCore();
    cleanups.push(cleanup);
    const wrongType = await core.registry.dispatch('datasets.get', { id: 'seven' }, { client: 't' });
    expect(wrongType).toMatchObject({ ok: false, error: { type: 'bad_input', details: { path: 'id' } } });
    const badKind = await core.registry.dispatch('datasets.import', { source: { kind: 'zip', path: '/x' } }, { client: 't' });
    expect(badKind.ok || badKind.error.message).toMatch(/source\.kind: expected one of "folder", "files"/);
    const extra = await core.registry.dispatch('datasets.get', { id: 1, sneaky: true }, { client: 't' });
    expect(extra.ok || extra.error.message).toMatch(/sneaky: expected no such field/);
    const huge = await core.registry.dispatch('datasets.get', { id: 1e300 }, { client: 't' });
    expect(huge.ok || huge.error.type).toBe('bad_input');
  });

  it('keeps expected failures apart from internal errors, and logs only the latter', async () => {
    const logged: string[] = [];
    const { core, cleanup } = makeCore();
    cleanups.push(cleanup);
    const handlers = Object.fromEntries(Object.keys(api).map((m) => [m, () => ({})])) as unknown as Handlers;
    handlers['datasets.get'] = () => {
      throw new ExpectedError('not_found', 'Dataset 9 does not exist.');
    };
    handlers['datasets.list'] = () => {
      throw new TypeError('cannot read properties of undefined');
    };
    const registry = new ApiRegistry(handlers, (method) => logged.push(method));
    expect(await registry.dispatch('datasets.get', { id: 9 }, { client: 't' })).toEqual({ ok: false, error: { type: 'not_found', message: 'Dataset 9 does not exist.' } });
    const internal = await registry.dispatch('datasets.list', {}, { client: 't' });
    expect(internal).toMatchObject({ ok: false, error: { type: 'internal' } });
    expect(logged).toEqual(['datasets.list']);
    void core;
  });

  it('answers app.info and app.health from the real database', async () => {
    const { call, dataDir, cleanup } = makeCore();
    cleanups.push(cleanup);
    const info = await call('app.info', {});
    expect(info).toMatchObject({ name: 'Shira Studio', host: 'test', dataDir, schemaVersion: LATEST_SCHEMA_VERSION });
    const health = await call('app.health', {});
    expect(health).toMatchObject({ ok: true, integrity: ['ok'], journalMode: 'wal' });
  });
});
