// The adapters.*, mix.* and mixes.* API methods: the library's rows (library.ts), packages (packages.ts), the
// fused mix on the engine (mixer.ts) and saved mixes (mixes.ts).
import { mkdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { HostKind } from '../../../shared/api';
import { badInput } from '../../../shared/errors';
import type { EventBus } from '../events';
import { exportsDir } from '../paths';
import type { HandlersOf } from '../registry';
import type { Engines } from '../worker/engines';
import { WorkerError } from '../worker/supervisor';
import type { AdapterLibrary } from './library';
import type { Mixer } from './mixer';
import type { SavedMixes } from './mixes';
import type { AdapterPackages } from './packages';

export interface AdapterDomain {
  library: AdapterLibrary;
  packages: AdapterPackages;
  mixer: Mixer;
  mixes: SavedMixes;
  engines: Engines;
  events: EventBus;
  host: HostKind;
  dataDir: string;
}

export function adapterHandlers(d: AdapterDomain): HandlersOf<'adapters'> {
  const { library, engines, events } = d;
  const changed = (id: number) => events.emit({ type: 'library.changed', what: 'adapters', id });
  return {
    'adapters.list': (filter) => library.list(filter),
    'adapters.get': ({ id }) => library.detail(id),
    'adapters.update': ({ id, ...patch }) => {
      const summary = library.update(id, patch);
      changed(id);
      return summary;
    },
    'adapters.duplicate': ({ id, name }) => {
      const summary = library.duplicate(id, name);
      changed(summary.id);
      return summary;
    },
    'adapters.delete': async ({ id }) => {
      await engines.serial(() => d.mixer.forget(id));
      const deleted = library.delete(id);
      if (deleted) changed(id);
      return { deleted };
    },
    'adapters.export': ({ id, dir }) => {
      // A studio-server client is not the server machine's user: it gets downloads
      // (/download/adapter/…), or the data folder's exports, never a path of its choosing.
      if (dir !== undefined && d.host === 'server') {
        throw badInput(`The studio server does not write exports to folders a client names; leave out "dir" to export into ${exportsDir(d.dataDir)}, or download the adapter from the browser.`, {
          path: 'dir',
        });
      }
      return d.packages.export(id, dir ?? exportsDir(d.dataDir));
    },
    'adapters.import': async ({ path, name, baseModelId }) => {
      const w = engines.worker;
      const tmp = join(d.dataDir, 'tmp');
      const converted: string[] = [];
      // What the worker finds wrong with the user's file (a bad checksum, an unknown layout) is
      // the file's problem, not an internal error; the core has checked the container before.
      const onFile = async <T>(work: () => Promise<T>): Promise<T> => {
        try {
          return await work();
        } catch (error) {
          if (error instanceof WorkerError && error.error.type !== 'internal') {
            throw badInput(`${basename(path)}: ${error.error.message.replace(/^adapter '[^']*': /, '')}`);
          }
          throw error;
        }
      };
      try {
        const summary = await d.packages.import(path, {
          name,
          baseModelId,
          convert: w
            ? async (src) => {
                // PEFT files store no layer shapes: the worker takes them from the loaded base model.
                await engines.serial(() => d.mixer.ensureBase(baseModelId));
                mkdirSync(tmp, { recursive: true });
                const out = join(tmp, `convert-${process.pid}-${Date.now()}.safetensors`);
                converted.push(out);
                await onFile(() => w.request('adapter_convert', { path: src, out }));
                return out;
              }
            : undefined,
          // The worker decodes every index and checks its checksum before anything is stored.
          verify: w ? (file) => onFile(async () => void (await w.request('adapter_inspect', { path: file }))) : undefined,
        });
        changed(summary.id);
        return summary;
      } finally {
        for (const f of converted) rmSync(f, { force: true });
      }
    },
  };
}

export function mixHandlers(d: AdapterDomain): HandlersOf<'mix' | 'mixes'> {
  const { mixer, mixes, events } = d;
  return {
    'mix.apply': async ({ entries, mixId }) => {
      if ((entries === undefined) === (mixId === undefined)) throw badInput('Give either entries or mixId.');
      const chosen = entries ?? mixes.entries(mixId!);
      return d.engines.serial(() => mixer.apply(chosen));
    },
    'mix.current': () => mixer.current(),
    'mixes.list': () => mixes.list(),
    'mixes.save': (input) => {
      const mix = mixes.save(input);
      events.emit({ type: 'library.changed', what: 'mixes', id: mix.id });
      return mix;
    },
    'mixes.delete': ({ id }) => {
      const deleted = mixes.delete(id);
      if (deleted) events.emit({ type: 'library.changed', what: 'mixes', id });
      return { deleted };
    },
  };
}
