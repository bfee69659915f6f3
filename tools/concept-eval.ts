// The concept-loss protocol (`npm run eval:concept`): how much of each style survives when two
// style adapters are fused, SHiRA against parameter-matched LoRA, in numbers.
//   1. data: per style, disjoint held-out clipart → a training set (adapters) and a judge set
//   2. judge: a small CNN (worker op judge_train) on the judge sets + the base model's own samples
//   3. adapters: every style × method × seed, same steps, data order and learning rate
//   4. scores: judge probability of the adapter's style on images drawn with its trigger prompts —
//      single (α = 1) and fused with each other style's adapter of the same method and seed (α = 1, 0.75)
//   5. drift: 1 − cos(judge features) between adapted and base images of unrelated prompts, same seeds
//   6. weight space: AWOM / AWOR between the two deltas of every fused pair (worker op adapter_overlap)
// Everything runs through the worker's JSON protocol; JSON rows on stdout, a table in docs/concept-loss.md.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConceptLab, CONTENT_PROMPTS, drift, mean, std, styleScore, UNRELATED_PROMPTS, type Scored } from '../src/main/core/concept/lab';
import { readSafetensors } from '../src/main/core/io/safetensors';
import { fileSha256 } from '../src/main/core/adapters/format';
import { WorkerSupervisor } from '../src/main/core/worker/supervisor';
import { buildStyleSet, STYLES, type StyleName } from './styles';

export const CONCEPT_METHODS = {
  'shira-struct': { method: 'shira', mask: 'struct', density: 0.02 },
  'shira-rand': { method: 'shira', mask: 'rand', density: 0.02 },
  'shira-snip': { method: 'shira', mask: 'snip', density: 0.02 },
  'lora-matched': { method: 'lora', matchDensity: 0.02 },
} as const;
export type ConceptMethod = keyof typeof CONCEPT_METHODS;

export interface ConceptOptions {
  worker: string;
  threads: number;
  model: string;
  heldout: string;
  workDir: string;
  styles: StyleName[];
  methods: ConceptMethod[];
  seeds: number[];
  steps: number;
  batch: number;
  lr: number;
  /** Images per style set for adapter training and for the judge (disjoint). */
  trainImages: number;
  judgeImages: number;
  /** Sampling for scores: prompts × seeds per measurement. */
  sampleSteps: number;
  guidance: number;
  alphas: number[];
  /** Seeds of the score images (prompts × seeds per measurement). */
  scoreSeeds: number[];
  log: (line: string) => void;
  emitRow?: (row: Record<string, unknown>) => void;
}

export const SMALL_CONFIG = {
  styles: ['pixel', 'ink', 'watercolor', 'neon'] as StyleName[],
  methods: ['shira-struct', 'shira-rand', 'shira-snip', 'lora-matched'] as ConceptMethod[],
  seeds: [0, 1, 2],
  steps: 80,
  batch: 8,
  lr: 4e-3,
  trainImages: 48,
  judgeImages: 24,
  sampleSteps: 20,
  guidance: 4,
  alphas: [1, 0.75],
  scoreSeeds: [101],
};

/** Content words for style prompts (the trigger is prepended) and unrelated prompts for drift. */
const CONTENT = CONTENT_PROMPTS;
const UNRELATED = UNRELATED_PROMPTS;
const BASE_SAMPLE_SEEDS = [11, 12, 13, 14, 15, 16, 17, 18];
const BASE_PROMPTS = [...CONTENT, ...UNRELATED];

/**
 * `eval:styles:data`: per style a training set and a disjoint judge set from the held-out clipart
 * (style s takes images s, s + S, s + 2S … so no two styles share a source image).
 */
export async function buildStyleBenchmark(
  o: Pick<ConceptOptions, 'styles' | 'heldout' | 'workDir' | 'trainImages' | 'judgeImages'>,
): Promise<Record<string, { train: string; judge: string; trigger: string }>> {
  mkdirSync(o.workDir, { recursive: true });
  const sets: Record<string, { train: string; judge: string; trigger: string }> = {};
  for (const [s, style] of o.styles.entries()) {
    const train = join(o.workDir, `${style}-train.safetensors`);
    const judge = join(o.workDir, `${style}-judge.safetensors`);
    const stride = o.styles.length;
    if (!existsSync(train)) await buildStyleSet({ source: o.heldout, style, out: train, count: o.trainImages, offset: s, stride });
    if (!existsSync(judge)) await buildStyleSet({ source: o.heldout, style, out: judge, count: o.judgeImages, offset: s + stride * o.trainImages, stride });
    sets[style] = { train, judge, trigger: STYLES[style].trigger };
  }
  return sets;
}

export async function runConceptEval(o: ConceptOptions): Promise<Record<string, unknown>> {
  mkdirSync(o.workDir, { recursive: true });
  const w = new WorkerSupervisor({ binary: o.worker, threads: o.threads, readyTimeoutMs: 60_000 });
  const t0 = Date.now();
  try {
    await w.request('load_model', { path: o.model });
    const classes = ['base', ...o.styles];
    const lab = new ConceptLab(w, join(o.workDir, 'scratch'), { steps: o.sampleSteps, guidance: o.guidance });

    // 1. data
    const sets = await buildStyleBenchmark(o);

    // 2. judge: the base model's own samples against each style's judge set
    const judgeFile = join(o.workDir, 'judge.safetensors');
    await w.request('clear_mix', {});
    const baseImages = await lab.images(BASE_PROMPTS, BASE_SAMPLE_SEEDS, 'base-judge');
    const judge = await lab.trainJudge(classes, [baseImages, ...o.styles.map((st) => readSafetensors(sets[st]!.judge).tensors.get('images')!)], judgeFile, { steps: 400 });
    o.log(`judge: held-out accuracy ${(judge.heldout_accuracy * 100).toFixed(1)} % over ${classes.join(', ')}`);
    const score = async (prompts: string[], tag: string) => lab.score(judgeFile, await lab.images(prompts, o.scoreSeeds, tag));

    // base images of the score prompts, for drift (same seeds as every adapter's)
    const baseStyle: Record<string, Scored> = {};
    for (const style of o.styles)
      baseStyle[style] = await score(
        CONTENT.map((c) => `${sets[style]!.trigger}, ${c}`),
        `base-${style}`,
      );
    const baseUnrelated = await score(UNRELATED, 'base-unrelated');

    // 3. adapters
    // The recipe and the base model's hash are in the name: a work folder reused with another base model, steps,
    // batch or lr must not hand back adapters trained another way (they are reused only when everything that made
    // them matches), so an interrupted run resumes where it stopped.
    const base = fileSha256(o.model).slice(0, 12);
    const adapterFile = (m: ConceptMethod, style: string, seed: number) => join(o.workDir, `${m}-${style}-s${seed}-${o.steps}x${o.batch}-lr${o.lr}-${base}.safetensors`);
    for (const seed of o.seeds)
      for (const m of o.methods)
        for (const style of o.styles) {
          const out = adapterFile(m, style, seed);
          if (existsSync(out)) continue;
          const r = await w.request('train', { ...CONCEPT_METHODS[m], data: sets[style]!.train, out, steps: o.steps, batch: o.batch, lr: o.lr, seed, flip: true, progressEvery: 1000 });
          o.log(`trained ${m} ${style} seed ${seed}: loss ${Number(r.first_loss).toFixed(3)} → ${Number(r.final_loss).toFixed(3)}, ${Number(r.trainable)} values, ${Number(r.seconds).toFixed(0)} s`);
        }

    // 4–6. single and fused scores, drift, overlap
    const rows: Record<string, unknown>[] = [];
    const stylePrompts = (style: string) => CONTENT.map((c) => `${sets[style]!.trigger}, ${c}`);
    for (const seed of o.seeds)
      for (const m of o.methods) {
        const single: Record<string, number> = {};
        for (const style of o.styles) {
          await w.request('apply_mix', { adapters: [{ path: adapterFile(m, style, seed), alpha: 1 }] });
          const s = await score(stylePrompts(style), `${m}-${style}-s${seed}-single`);
          const u = await score(UNRELATED, `${m}-${style}-s${seed}-unrelated`);
          single[style] = styleScore(s, style);
          const row = { name: 'single', method: m, seed, style, score: single[style], base_score: styleScore(baseStyle[style]!, style), drift: drift(u, baseUnrelated) };
          rows.push(row);
          o.emitRow?.(row);
        }
        for (let i = 0; i < o.styles.length; i++)
          for (let j = i + 1; j < o.styles.length; j++) {
            const [a, b] = [o.styles[i]!, o.styles[j]!];
            const overlap = await lab.overlap(adapterFile(m, a, seed), adapterFile(m, b, seed));
            for (const alpha of o.alphas) {
              await w.request('apply_mix', {
                adapters: [
                  { path: adapterFile(m, a, seed), alpha },
                  { path: adapterFile(m, b, seed), alpha },
                ],
              });
              for (const [style, other] of [
                [a, b],
                [b, a],
              ] as const) {
                const s = await score(stylePrompts(style), `${m}-${a}+${b}-a${alpha}-s${seed}-${style}`);
                const fused = styleScore(s, style);
                const row = {
                  name: 'fused',
                  method: m,
                  seed,
                  alpha,
                  style,
                  with: other,
                  single: single[style],
                  fused,
                  drop_points: (single[style]! - fused) * 100,
                  retention: single[style]! > 0 ? fused / single[style]! : null,
                  awom: overlap.awom_mean,
                  awom_normalized: overlap.awom_normalized_mean,
                  awor: overlap.awor_mean,
                };
                rows.push(row);
                o.emitRow?.(row);
              }
            }
          }
        o.log(`scored ${m} seed ${seed}`);
      }
    await w.request('clear_mix', {});
    const summary = summarise(rows, o);
    return { config: { ...o, log: undefined, emitRow: undefined, worker: undefined }, judge, classes, seconds: (Date.now() - t0) / 1000, summary, rows };
  } finally {
    await w.close();
    rmSync(join(o.workDir, 'scratch'), { recursive: true, force: true });
  }
}

type Agg = { mean: number; std: number; n: number };
const agg = (xs: number[]): Agg => ({ mean: mean(xs), std: std(xs), n: xs.length });

/** Per method: averages over styles per seed, then mean ± std over seeds (the spread shown). */
export function summarise(rows: Record<string, unknown>[], o: Pick<ConceptOptions, 'methods' | 'seeds' | 'alphas'>): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const m of o.methods) {
    const perSeed = (pick: (r: Record<string, unknown>) => boolean, field: string) =>
      o.seeds.map((seed) =>
        mean(
          rows
            .filter((r) => r.method === m && r.seed === seed && pick(r))
            .map((r) => Number(r[field]))
            .filter((x) => Number.isFinite(x)),
        ),
      );
    const entry: Record<string, unknown> = {
      method: m,
      single_score: agg(perSeed((r) => r.name === 'single', 'score')),
      drift: agg(perSeed((r) => r.name === 'single', 'drift')),
    };
    for (const alpha of o.alphas) {
      const fused = (r: Record<string, unknown>) => r.name === 'fused' && r.alpha === alpha;
      entry[`alpha_${alpha}`] = {
        fused_score: agg(perSeed(fused, 'fused')),
        drop_points: agg(perSeed(fused, 'drop_points')),
        retention: agg(perSeed(fused, 'retention')),
      };
    }
    const first = (r: Record<string, unknown>) => r.name === 'fused' && r.alpha === o.alphas[0];
    entry.awom_normalized = agg(perSeed(first, 'awom_normalized'));
    entry.awor = agg(perSeed(first, 'awor'));
    out.push(entry);
  }
  return out;
}

const pm = (a: Agg, scale = 1, digits = 1) => `${(a.mean * scale).toFixed(digits)} ± ${(a.std * scale).toFixed(digits)}`;

export function conceptMarkdown(result: Record<string, unknown>, hardware: string, date: string): string {
  const summary = result.summary as Record<string, Agg | Record<string, Agg> | string>[];
  const config = result.config as ConceptOptions;
  const judge = result.judge as { heldout_accuracy: number; heldout_accuracy_per_class?: number[] };
  const classes = result.classes as string[];
  const lines = [
    '| method | single style score | fused, α = 1 | drop (points) | retention | fused, α = 0.75 | drop (points) | retention | drift | AWOR | AWOM (normalised) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...summary.map((e) => {
      const a1 = e[`alpha_${config.alphas[0]}`] as Record<string, Agg>;
      const a2 = e[`alpha_${config.alphas[1] ?? config.alphas[0]}`] as Record<string, Agg>;
      return `| ${e.method as string} | ${pm(e.single_score as Agg, 100)} | ${pm(a1.fused_score!, 100)} | ${pm(a1.drop_points!)} | ${pm(a1.retention!, 1, 2)} | ${pm(a2.fused_score!, 100)} | ${pm(a2.drop_points!)} | ${pm(a2.retention!, 1, 2)} | ${pm(e.drift as Agg, 1, 3)} | ${pm(e.awor as Agg, 1, 3)} | ${pm(e.awom_normalized as Agg, 1, 3)} |`;
    }),
  ];
  return [
    `Measured ${date} on ${hardware}; ${config.styles.length} styles (${config.styles.join(', ')}), seeds ${config.seeds.join(', ')}, ${config.steps} steps × batch ${config.batch}, lr ${config.lr}, ${config.sampleSteps} DDIM steps with guidance ${config.guidance}, ${CONTENT.length} prompts × ${config.scoreSeeds.length} seed(s) per score. Mean ± standard deviation over the seeds (each seed's number is the mean over styles or style pairs). Wall time ${(Number(result.seconds) / 60).toFixed(0)} min.`,
    '',
    `Judge: held-out accuracy ${(judge.heldout_accuracy * 100).toFixed(1)} % over ${classes.length} classes (${classes.map((c, i) => `${c} ${judge.heldout_accuracy_per_class ? `${(judge.heldout_accuracy_per_class[i]! * 100).toFixed(0)} %` : ''}`).join(', ')}).`,
    '',
    ...lines,
  ].join('\n');
}
