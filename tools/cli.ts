// The research and model-building commands (`node out/main/tools.js <command>`, `npm run data:clipart`,
// `train:base`, `eval:base`, `eval:concept`, `bench:*` …): clipart data, the built-in base model, its evaluation,
// style sets, the concept-loss protocol, demos and benchmarks through the library. The command-line entry
// (src/main/hosts/cli/main.ts) hands every command but the app's own `pack` to runTool. Data a command reads is
// built first when missing (data.ts), so each works from a fresh clone.
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { argValue, defaultWorkerBinary } from '../src/main/core/paths';
import { findBuiltinModels, newestBuiltin } from '../src/main/core/models/builtin';
import { buildClipartDataset, extractAuthors } from './clipart';
import { sampleGrid, trainBase } from './base-model';
import { writeModelCard } from './model-card';
import { buildStyleSet, STYLE_NAMES, STYLES, type StyleName } from './styles';
import { runAdapterDemo, unpackToFolder } from './adapter-demo';
import { evalBase, parseSamplers } from './eval-base';
import { benchLibrary } from './bench-library';
import { benchOrt, ortExport } from './bench-ort';
import { buildStyleBenchmark, CONCEPT_METHODS, conceptMarkdown, runConceptEval, SMALL_CONFIG, type ConceptMethod } from './concept-eval';
import { writeConceptDoc } from './concept-doc';
import { ensureClipart, ensureStyleSet } from './data';

export const TOOLS_USAGE = '       tools clipart [--root DIR] [--resolution 64] [--out-dir DIR] [--limit N]\n       tools clipart-authors [--svg DIR] [--out FILE]';
const log = (line: string) => console.error(line);

/** The built-in that new work uses (a fresh library's default): the newest along the "supersedes" chain. */
function defaultModel(appRoot: string): string {
  const models = findBuiltinModels(join(appRoot, 'resources'));
  const name = newestBuiltin(models);
  const model = models.find((m) => m.name === name);
  if (!model) throw new Error(`no built-in model in ${join(appRoot, 'resources', 'models')}; pass --model`);
  return model.weightsPath;
}

async function clipart(argv: string[]): Promise<void> {
  const summary = await buildClipartDataset({
    root: argValue(argv, 'root') ?? '/usr/share/openclipart/png',
    authorsFile: argValue(argv, 'authors') ?? resolve('resources/data/openclipart-authors.tsv'),
    resolution: Number(argValue(argv, 'resolution') ?? 64),
    outDir: resolve(argValue(argv, 'out-dir') ?? `.data/clipart-${argValue(argv, 'resolution') ?? 64}`),
    limit: argValue(argv, 'limit') ? Number(argValue(argv, 'limit')) : undefined,
    log: (line) => console.error(line),
  });
  console.log(JSON.stringify(summary));
}

function clipartAuthors(argv: string[]): void {
  const authors = extractAuthors(argValue(argv, 'svg') ?? '/usr/share/openclipart/svg');
  const out = resolve(argValue(argv, 'out') ?? 'resources/data/openclipart-authors.tsv');
  const header = '# basename<TAB>author, from <dc:creator> in Debian openclipart-svg (public domain); regenerate: tools clipart-authors\n';
  writeFileSync(out, header + [...authors].map(([k, v]) => `${k}\t${v}`).join('\n') + '\n');
  console.log(JSON.stringify({ out, entries: authors.size }));
}

async function trainBaseCommand(argv: string[], appRoot: string): Promise<void> {
  const resolution = Number(argValue(argv, 'resolution') ?? 64);
  const device = argValue(argv, 'device') ?? 'auto';
  const worker = defaultWorkerBinary(appRoot);
  const name = argValue(argv, 'name') ?? `clipart-${resolution}-v3`;
  const outDir = resolve(argValue(argv, 'out') ?? join(appRoot, 'resources', 'models', name));
  const threads = Number(argValue(argv, 'threads') ?? availableParallelism());
  const summary = await trainBase({
    worker,
    name,
    previous: argValue(argv, 'previous'),
    initFrom: argValue(argv, 'init-from') ? resolve(argValue(argv, 'init-from')!) : undefined,
    device,
    resolution,
    // CPU default (the shipped weights' recipe): about 52 min with 2 threads on this 2-core VM; use --steps 40000 on a GPU.
    steps: Number(argValue(argv, 'steps') ?? 6000),
    batch: Number(argValue(argv, 'batch') ?? 16),
    lr: Number(argValue(argv, 'lr') ?? 5e-4),
    ema: Number(argValue(argv, 'ema') ?? 0.995),
    tagDropout: Number(argValue(argv, 'tag-dropout') ?? 0.5),
    categoryBalance: Number(argValue(argv, 'category-balance') ?? 0.5),
    patchSize: Number(argValue(argv, 'patch') ?? 4),
    threads,
    resume: argv.includes('--resume'),
    exportOnly: argv.includes('--export-only'),
    runDir: resolve(argValue(argv, 'run-dir') ?? `.data/runs/${name}`),
    outDir,
    dataDir: resolve(argValue(argv, 'data') ?? `.data/clipart-${resolution}`),
    log: (line) => console.error(line),
  });
  await sampleGrid(worker, outDir, join(outDir, 'samples.png'), [1, 2, 3, 4], 1);
  writeModelCard(outDir, resolve(argValue(argv, 'data') ?? `.data/clipart-${resolution}`));
  console.log(JSON.stringify(summary));
}

/** Runs one research command; false when `command` is none of them. `appRoot`: where native/ and resources/ are. */
export async function runTool(command: string | undefined, rest: string[], appRoot: string): Promise<boolean> {
  if (command === 'train-base') return trainBaseCommand(rest, appRoot).then(() => true);
  if (command === 'eval-base') {
    const resolution = Number(argValue(rest, 'resolution') ?? 64);
    await ensureClipart({ dataDir: resolve(argValue(rest, 'data') ?? `.data/clipart-${resolution}`), resolution, explicit: argValue(rest, 'data') !== undefined, log });
    const result = await evalBase({
      worker: defaultWorkerBinary(appRoot),
      threads: Number(argValue(rest, 'threads') ?? availableParallelism()),
      model: resolve(argValue(rest, 'model') ?? defaultModel(appRoot)),
      train: resolve(argValue(rest, 'data') ?? `.data/clipart-${resolution}`, 'train.safetensors'),
      heldout: resolve(argValue(rest, 'data') ?? `.data/clipart-${resolution}`, 'heldout.safetensors'),
      perCategory: Number(argValue(rest, 'per-category') ?? 16),
      minImages: Number(argValue(rest, 'min-images') ?? 100),
      guidance: (argValue(rest, 'guidance') ?? '5,4,7.5').split(',').map((g) => {
        const n = Number(g);
        if (g.trim() === '' || !Number.isFinite(n) || n < 0 || n > 30) throw new Error(`--guidance takes comma-separated scales in 0..30, got "${g}"`);
        return n;
      }),
      judgeSteps: Number(argValue(rest, 'judge-steps') ?? 800),
      samplers: parseSamplers(argValue(rest, 'samplers') ?? 'ddim:10,ddim:25,ddim:50,euler:25'),
      sweepSeeds: (argValue(rest, 'sweep-seeds') ?? '1,2,3,4').split(',').map(Number),
      denoiseTimesteps: (argValue(rest, 'denoise-t') ?? '1,21,41,81,161,321').split(',').map(Number),
      log: (line) => console.error(line),
    });
    // --write records the numbers beside the weights, where the model card quotes them.
    if (rest.includes('--write')) {
      const modelDir = dirname(String(result.model));
      writeFileSync(join(modelDir, 'eval.json'), `${JSON.stringify({ ...result, model: relative(appRoot, String(result.model)) }, null, 1)}\n`);
      writeModelCard(modelDir, resolve(argValue(rest, 'data') ?? `.data/clipart-${resolution}`));
    }
    console.log(JSON.stringify(result));
    return true;
  }
  if (command === 'adapter-demo') {
    const style = (argValue(rest, 'style') ?? 'neon') as StyleName;
    if (!STYLE_NAMES.includes(style)) throw new Error(`--style must be one of ${STYLE_NAMES.join(', ')}`);
    const folder = resolve(argValue(rest, 'folder') ?? `.data/styles/${style}-folder`);
    if (!argValue(rest, 'folder')) {
      await ensureStyleSet({ style, file: resolve(`.data/styles/${style}.safetensors`), heldout: resolve('.data/clipart-64/heldout.safetensors'), log });
      await unpackToFolder(resolve(`.data/styles/${style}.safetensors`), folder);
    }
    const summary = await runAdapterDemo({
      worker: defaultWorkerBinary(appRoot),
      threads: Number(argValue(rest, 'threads') ?? availableParallelism()),
      model: resolve(argValue(rest, 'model') ?? defaultModel(appRoot)),
      styleFolder: folder,
      trigger: STYLES[style].trigger,
      workDir: resolve(argValue(rest, 'work-dir') ?? `.data/demo/${style}`),
      steps: Number(argValue(rest, 'steps') ?? 200),
      lr: Number(argValue(rest, 'lr') ?? 1e-3),
      batch: Number(argValue(rest, 'batch') ?? 8),
      seed: 7,
      prompts: [
        `${STYLES[style].trigger}, bird, birds, animals`,
        `${STYLES[style].trigger}, house, buildings`,
        `${STYLES[style].trigger}, car, transportation`,
        `${STYLES[style].trigger}, flower, plants`,
      ],
      outPng: resolve(argValue(rest, 'out') ?? `docs/images/adapters-${style}.png`),
      log: (line) => console.error(line),
    });
    console.log(JSON.stringify(summary));
    return true;
  }
  if (command === 'style-set') {
    const style = argValue(rest, 'style') as StyleName;
    if (!STYLE_NAMES.includes(style)) throw new Error(`--style must be one of ${STYLE_NAMES.join(', ')}`);
    if (!argValue(rest, 'source')) await ensureClipart({ dataDir: resolve('.data/clipart-64'), resolution: 64, log });
    const r = await buildStyleSet({
      source: resolve(argValue(rest, 'source') ?? '.data/clipart-64/heldout.safetensors'),
      style,
      out: resolve(argValue(rest, 'out') ?? `.data/styles/${style}.safetensors`),
      count: Number(argValue(rest, 'count') ?? 60),
      offset: Number(argValue(rest, 'offset') ?? 0),
      stride: Number(argValue(rest, 'stride') ?? 1),
    });
    console.log(JSON.stringify(r));
    return true;
  }
  if (command === 'sample-grid') {
    const dir = resolve(rest[0] ?? join(appRoot, 'resources/models/clipart-64'));
    await sampleGrid(defaultWorkerBinary(appRoot), dir, join(dir, 'samples.png'));
    return true;
  }
  if (command === 'model-card') {
    writeModelCard(resolve(rest[0] ?? 'resources/models/clipart-64'), resolve(rest[1] ?? '.data/clipart-64'));
    return true;
  }
  if (command === 'styles-data' || command === 'concept-eval') {
    const list = (key: string) =>
      argValue(rest, key)
        ?.split(',')
        .map((x) => x.trim())
        .filter(Boolean);
    const o = {
      ...SMALL_CONFIG,
      worker: defaultWorkerBinary(appRoot),
      threads: Number(argValue(rest, 'threads') ?? availableParallelism()),
      model: resolve(argValue(rest, 'model') ?? defaultModel(appRoot)),
      heldout: resolve(argValue(rest, 'heldout') ?? '.data/clipart-64/heldout.safetensors'),
      workDir: resolve(argValue(rest, 'work-dir') ?? '.data/concept'),
      ...(list('styles') ? { styles: list('styles') as StyleName[] } : {}),
      ...(list('methods') ? { methods: list('methods') as ConceptMethod[] } : {}),
      ...(list('seeds') ? { seeds: list('seeds')!.map(Number) } : {}),
      ...(argValue(rest, 'steps') ? { steps: Number(argValue(rest, 'steps')) } : {}),
      log: (line: string) => console.error(line),
      emitRow: (row: Record<string, unknown>) => console.log(JSON.stringify(row)),
    };
    for (const st of o.styles) if (!STYLE_NAMES.includes(st)) throw new Error(`--styles: "${st}" is not one of ${STYLE_NAMES.join(', ')}`);
    for (const m of o.methods) if (!(m in CONCEPT_METHODS)) throw new Error(`--methods: "${m}" is not one of ${Object.keys(CONCEPT_METHODS).join(', ')}`);
    if (!argValue(rest, 'heldout')) await ensureClipart({ dataDir: dirname(o.heldout), resolution: 64, log });
    if (command === 'styles-data') {
      console.log(JSON.stringify(await buildStyleBenchmark(o)));
      return true;
    }
    const result = await runConceptEval(o);
    console.log(JSON.stringify({ name: 'summary', summary: result.summary, judge: result.judge, seconds: result.seconds }));
    if (rest.includes('--write')) {
      const hardware = `${cpus()[0]?.model ?? 'CPU'}, ${o.threads} thread(s)`;
      writeConceptDoc(join(appRoot, 'docs', 'concept-loss.md'), conceptMarkdown(result, hardware, new Date().toISOString().slice(0, 10)));
      writeFileSync(join(appRoot, 'docs', 'concept-loss.json'), `${JSON.stringify(result, null, 1)}\n`);
    }
    return true;
  }
  if (command === 'bench-library') {
    await benchLibrary({
      worker: defaultWorkerBinary(appRoot),
      resourcesDir: join(appRoot, 'resources'),
      // The app's default (engines.ts): every core.
      threads: Number(argValue(rest, 'threads') ?? process.env.OMP_NUM_THREADS ?? availableParallelism()),
      reps: Number(argValue(rest, 'reps') ?? 5),
      maxN: Number(argValue(rest, 'max-n') ?? 8),
      emit: (row) => console.log(JSON.stringify(row)),
      log: (line) => console.error(line),
    });
    return true;
  }
  if (command === 'bench-ort') {
    await benchOrt({
      worker: defaultWorkerBinary(appRoot),
      model: resolve(argValue(rest, 'model') ?? defaultModel(appRoot)),
      threads: Number(argValue(rest, 'threads') ?? process.env.OMP_NUM_THREADS ?? 1),
      reps: Number(argValue(rest, 'reps') ?? 3),
      steps: Number(argValue(rest, 'steps') ?? 20),
      emit: (row) => console.log(JSON.stringify(row)),
      log: (line) => console.error(line),
    });
    return true;
  }
  if (command === 'ort-export') {
    const out = argValue(rest, 'out');
    if (!out) throw new Error('Usage: tools ort-export --out DIR [--model FILE] [--adapter NAME=ADAPTER.safetensors]...');
    const adapters = rest
      .flatMap((a, i) => (a === '--adapter' && rest[i + 1] ? [rest[i + 1]!] : []))
      .map((spec) => {
        const eq = spec.indexOf('=');
        if (eq < 1) throw new Error(`--adapter wants NAME=FILE, got "${spec}"`);
        return [spec.slice(0, eq), resolve(spec.slice(eq + 1))] as [string, string];
      });
    const result = await ortExport({
      worker: defaultWorkerBinary(appRoot),
      model: resolve(argValue(rest, 'model') ?? defaultModel(appRoot)),
      out: resolve(out),
      adapters,
      log: (line) => console.error(line),
    });
    console.log(JSON.stringify(result));
    return true;
  }
  if (command === 'clipart') return clipart(rest).then(() => true);
  if (command === 'clipart-authors') {
    clipartAuthors(rest);
    return true;
  }
  return false;
}
