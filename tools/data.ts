// The data the research tools read, built on first use so every `npm run` script works from a fresh clone:
// the clipart set (.data/clipart-<R>/, from Debian's openclipart-png; `npm run data:clipart` builds it on its own)
// and the style sets cut from its held-out part (.data/styles/<style>.safetensors).
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { buildClipartDataset } from './clipart';
import { buildStyleSet, type StyleName } from './styles';

export const CLIPART_ROOT = '/usr/share/openclipart/png';

/**
 * The clipart set in `dataDir` (train.safetensors, heldout.safetensors, manifest.json): built from `root` when
 * missing. A folder the user named (`explicit`) is never built into: its absence is an error naming the command.
 */
export async function ensureClipart(o: { dataDir: string; resolution: number; explicit?: boolean; root?: string; log: (line: string) => void }): Promise<void> {
  if (existsSync(join(o.dataDir, 'train.safetensors')) && existsSync(join(o.dataDir, 'heldout.safetensors'))) return;
  const command = `npm run data:clipart${o.resolution === 64 ? '' : ` -- --resolution ${o.resolution}`}`;
  if (o.explicit) throw new Error(`${o.dataDir} holds no clipart set (train.safetensors, heldout.safetensors); build one with \`${command} -- --out-dir ${o.dataDir}\`.`);
  const root = o.root ?? CLIPART_ROOT;
  if (!existsSync(root)) {
    throw new Error(`${o.dataDir} is missing and ${root} is not there to build it from: install Debian's openclipart-png (apt-get install openclipart-png), then run \`${command}\`.`);
  }
  o.log(`${o.dataDir} is missing: building it first from ${root} (what \`${command}\` does; a few minutes)`);
  await buildClipartDataset({ root, authorsFile: resolve('resources/data/openclipart-authors.tsv'), resolution: o.resolution, outDir: o.dataDir, log: o.log });
}

/** A style set (`tools style-set`'s defaults: 60 images of the held-out clipart in `heldout`), built when missing. */
export async function ensureStyleSet(o: { style: StyleName; file: string; heldout: string; log: (line: string) => void; root?: string }): Promise<void> {
  if (existsSync(o.file)) return;
  await ensureClipart({ dataDir: dirname(o.heldout), resolution: 64, root: o.root, log: o.log });
  o.log(`${o.file} is missing: building the ${o.style} style set first (what \`npm run tools -- style-set --style ${o.style}\` does)`);
  await buildStyleSet({ source: o.heldout, style: o.style, out: o.file, count: 60, offset: 0, stride: 1 });
}
