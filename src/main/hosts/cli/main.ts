// The headless command line, built as out/main/tools.js (`npm run tools -- <command>`):
//   node out/main/tools.js pack --folder DIR --out FILE.safetensors [--resolution 64] [--fit cover|contain] [--trigger WORD]
// `pack` is the app's own: it reads a folder the way the app's import does (kohya folders, caption sidecars, the
// same rejects) and writes the packed dataset the native worker trains from. Every other command is a research or
// model-building tool from tools/ (tools/cli.ts).
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImageRejected, processImage } from '../../core/datasets/images';
import { captionFor, scanFolder } from '../../core/datasets/scan';
import { argValue } from '../../core/paths';
import { packImages, type PackFit, type PackSource } from '../../core/worker/pack';
import { runTool, TOOLS_USAGE } from '../../../../tools/cli';

/** The app's root (two folders above out/main/): native/, resources/. */
const appRoot = fileURLToPath(new URL('../../', import.meta.url));

const USAGE = 'Usage: tools pack --folder DIR --out FILE.safetensors [--resolution 64] [--fit cover|contain] [--trigger WORD]';

async function pack(argv: string[]): Promise<void> {
  const folder = argValue(argv, 'folder');
  const out = argValue(argv, 'out');
  if (!folder || !out) throw new Error(USAGE);
  const resolution = Number(argValue(argv, 'resolution') ?? 64);
  const fit = (argValue(argv, 'fit') ?? 'cover') as PackFit;
  if (fit !== 'cover' && fit !== 'contain') throw new Error(`--fit must be "cover" or "contain", got "${fit}"`);
  const scan = await scanFolder(resolve(folder));
  const sources: PackSource[] = [];
  let skipped = 0;
  for (const c of scan.candidates) {
    try {
      if (c.rejected) throw new ImageRejected(c.rejected);
      const image = await processImage(await readFile(c.absPath));
      sources.push({ caption: captionFor(scan, c).caption, repeats: c.repeats, image: image.normalized });
    } catch (error) {
      if (!(error instanceof ImageRejected)) throw error;
      skipped++;
      console.error(`skipped ${c.displayPath}: ${error.message}`);
    }
  }
  const result = await packImages(sources, resolve(out), { resolution, fit, triggerWord: argValue(argv, 'trigger') ?? null });
  console.log(JSON.stringify({ out: resolve(out), images: result.count, skipped, resolution, bytes: result.bytes }));
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === 'pack') return pack(rest);
  if (!(await runTool(command, rest, appRoot))) throw new Error(`${USAGE}\n${TOOLS_USAGE}`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
