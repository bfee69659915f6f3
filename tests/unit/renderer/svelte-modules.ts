// The renderer's state classes use runes ($state, $derived), which only the Svelte compiler
// understands. The unit project runs plain Node without the Svelte plugin, so these tests bundle
// the modules they need with Vite + the Svelte plugin (client runtime included) and import that.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { build } from 'vite';

const ROOT = resolve(import.meta.dirname, '../../..');

/** Compiled exports of the given renderer modules (paths relative to the repository root). */
// Typed loosely on purpose: the rune modules cannot be type-checked under the Node tsconfig.
export async function loadRendererModules(files: string[]): Promise<Record<string, any>> {
  const dir = mkdtempSync(join(tmpdir(), 'shira-renderer-test-'));
  const entry = join(dir, 'entry.ts');
  writeFileSync(entry, files.map((f) => `export * from ${JSON.stringify(resolve(ROOT, f))};`).join('\n'));
  try {
    const output = await build({
      configFile: false,
      logLevel: 'silent',
      root: ROOT,
      plugins: [svelte({ configFile: false })],
      resolve: { conditions: ['browser'] },
      build: { write: false, minify: false, emptyOutDir: false, lib: { entry, formats: ['es'], fileName: 'bundle' } },
    });
    const result = Array.isArray(output) ? output[0] : output;
    if (!('output' in result)) throw new Error('vite build returned a watcher');
    const chunk = result.output.find((o) => o.type === 'chunk');
    if (!chunk || chunk.type !== 'chunk') throw new Error('vite build produced no chunk');
    const file = join(dir, 'bundle.mjs');
    writeFileSync(file, chunk.code);
    return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Lets queued promise callbacks (and Svelte's microtask flushes) run. */
export async function settle(times = 5): Promise<void> {
  for (let i = 0; i < times; i++) await new Promise((r) => setTimeout(r, 0));
}
