// MODEL_CARD.md for a built-in model, from what the run recorded (training.json) and the data
// manifest — never typed by hand, so the card cannot drift from the weights beside it.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SAMPLE_PROMPTS } from './base-model';

/** What a model card quotes from eval.json (older files lack the later fields). */
interface EvalFile {
  categories: string[];
  chance: number;
  classifier_heldout_accuracy: number;
  classifier?: { kind: string; steps: number };
  guidance?: number;
  by_guidance?: { guidance: number; overall: number; vs_chance: number }[];
  sample_threads?: number;
  generated_accuracy: { overall: number; per_category: Record<string, number>; vs_chance: number };
  frechet: { generated_vs_heldout: number; train_subset_vs_heldout: number; samples: number; feature_dim: number };
  sample_ms_64px_25steps_cfg: number;
  speckle?: {
    training_images: number;
    guidance: number;
    seeds: number[];
    prompts: string[];
    by_sampler: { sampler: string; steps: number; speckle: number; vs_training: number; prompt_distance: number; seed_distance: number; prompt_vs_seed: number }[];
  };
  denoiser?: { t: number; sigma: number; kept: number; skip_only: number }[];
}

const readEval = (dir: string): EvalFile | null => (existsSync(join(dir, 'eval.json')) ? (JSON.parse(readFileSync(join(dir, 'eval.json'), 'utf8')) as EvalFile) : null);

/** The headline numbers of issue 23's goals, one value per model: accuracy, speckle, prompt sensitivity, speed, size. */
function headline(ev: EvalFile): Record<string, string> {
  const main = ev.speckle?.by_sampler.find((r) => r.sampler === 'ddim' && r.steps === 25) ?? ev.speckle?.by_sampler[0];
  return {
    [`category accuracy at guidance ${String(ev.guidance ?? 5)} (goal ≥ 4× chance)`]: `${(100 * ev.generated_accuracy.overall).toFixed(1)} % = ${ev.generated_accuracy.vs_chance.toFixed(2)}× chance`,
    'speckle, DDIM 25 steps, against the training images (goal ≤ 1.5×)': main ? `${main.speckle.toFixed(3)} = ${main.vs_training.toFixed(2)}×` : 'not measured',
    'prompt vs seed distance, DDIM 25 steps (goal ≥ 1)': main ? `${main.prompt_distance.toFixed(3)} / ${main.seed_distance.toFixed(3)} = ${main.prompt_vs_seed.toFixed(2)}` : 'not measured',
    'Fréchet distance to held-out images': ev.frechet.generated_vs_heldout.toFixed(2),
    'one 64×64 image, 25 DDIM steps, 1 thread': `${ev.sample_ms_64px_25steps_cfg.toFixed(0)} ms`,
  };
}

/** training.json, as train:base writes it. */
interface TrainingRecord {
  name: string;
  weights: { tensors: number; bytes: number };
  wall_seconds: number;
  sessions: number;
  result: { first_loss?: number; final_loss?: number; trainable?: number; steps?: number; seconds?: number };
  hardware: string;
  device: string;
  threads: number;
  steps: number;
  batch: number;
  lr: number;
  ema: number;
  caption_tag_dropout?: number;
  category_balance?: number;
  /** The built-in this one supersedes (a sibling folder), whose numbers the card puts beside its own. */
  previous?: string;
  /** Weights the run started from (a warm start), relative to the app. */
  init_from?: string;
  /** The earlier phase of this model that `init_from` came from. */
  before?: TrainingRecord;
}

export function writeModelCard(modelDir: string, dataDir: string): void {
  const training = JSON.parse(readFileSync(join(modelDir, 'training.json'), 'utf8')) as TrainingRecord;
  // Oldest phase first: a run warm-started from an earlier phase of this model keeps that phase as `before`.
  const phases: TrainingRecord[] = [];
  for (let p: TrainingRecord | undefined = training; p; p = p.before) phases.unshift(p);
  const wallSeconds = phases.reduce((a, p) => a + p.wall_seconds, 0);
  const sittings = phases.reduce((a, p) => a + p.sessions, 0);
  const config = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as {
    unet: Record<string, unknown>;
    text_encoder: { vocab: string[] } & Record<string, unknown>;
    diffusion: Record<string, unknown>;
  };
  const manifest = existsSync(join(dataDir, 'manifest.json'))
    ? (JSON.parse(readFileSync(join(dataDir, 'manifest.json'), 'utf8')) as {
        files: number;
        unreadable: number;
        duplicates: number;
        kept: number;
        train: { images: number };
        heldout: { images: number };
        categories: Record<string, number>;
      })
    : null;
  const { vocab, ...text } = config.text_encoder;
  const ev = readEval(modelDir);
  const prev = training.previous ? readEval(join(modelDir, '..', training.previous)) : null;
  const sha256 = createHash('sha256')
    .update(readFileSync(join(modelDir, 'model.safetensors')))
    .digest('hex');
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  const gpu = training.device.startsWith('cuda');
  const successor = readdirSync(join(modelDir, '..')).find((d) => {
    const f = join(modelDir, '..', d, 'config.json');
    return existsSync(f) && (JSON.parse(readFileSync(f, 'utf8')) as { supersedes?: string }).supersedes === training.name;
  });
  const lines = [
    `# ${training.name} — Shira Studio's built-in base model`,
    '',
    `A small text-to-image diffusion model (pixel space, ${String(config.unet.sample_size)}×${String(config.unet.sample_size)}) trained by this project on public-domain clipart, so the app works offline out of the box. It is a test bed for style adapters (SHiRA and LoRA), not a general image model: expect clipart-like shapes and colours on white.`,
    '',
    ...(successor
      ? [
          `**Superseded by [${successor}](../${successor}/MODEL_CARD.md)** as the default for new work. It stays installed so that adapters trained on these weights keep working; they are refused on ${successor} (other weights, other identity).`,
          '',
        ]
      : []),
    '## Training hardware',
    '',
    `Trained on **${gpu ? 'a CUDA GPU' : 'CPU'}** — ${training.hardware}, ${training.threads} thread(s), device \`${training.device}\`. ${gpu ? '' : 'No GPU was available to the session that trained these weights; a longer GPU run (`npm run train:base -- --device cuda --steps 40000`) will give a better model with the same recipe.'}`,
    '',
    '| | |',
    '| --- | --- |',
    `| steps × batch | ${phases.map((p) => `${p.steps} × ${p.batch}`).join(' + ')}${phases.length > 1 ? ' (one cosine schedule per phase)' : ''} |`,
    `| learning rate | ${training.lr} (AdamW, cosine, EMA ${training.ema}, horizontal flips, 10 % caption dropout${training.caption_tag_dropout ? `, ${pct(training.caption_tag_dropout)} caption tag dropout` : ''}${training.category_balance ? `, categories drawn ∝ size^(1−${String(training.category_balance)})` : ''}) |`,
    `| wall time | ${(wallSeconds / 60).toFixed(1)} min over ${sittings} sitting(s)${phases.length > 1 ? ` (${phases.map((p) => `${(p.wall_seconds / 60).toFixed(1)}`).join(' + ')} min)` : ''} |`,
    `| training loss (v-prediction MSE${config.diffusion.sigma_data !== undefined && config.diffusion.sigma_data !== 1 ? `, σ_d = ${String(config.diffusion.sigma_data)}` : ''}) | ${phases.map((p) => `${p.result.first_loss?.toFixed(4) ?? '?'} at the first step → ${p.result.final_loss?.toFixed(4) ?? '?'} at the last`).join('; then ')} |`,
    `| parameters | ${training.result.trainable?.toLocaleString('en') ?? '?'} (UNet + text encoder) |`,
    `| weights | fp16 safetensors, ${(training.weights.bytes / 2 ** 20).toFixed(1)} MiB, ${training.weights.tensors} tensors |`,
    `| SHA-256 of model.safetensors (the identity adapters record) | \`${sha256}\` |`,
    `| start | ${phases[0]!.init_from ? `warm start from \`${phases[0]!.init_from}\` (its tensors; token rows by word, new rows fresh)` : 'a random init'}${phases.length > 1 ? '; each later phase from the one before' : ''} |`,
    '',
    ...(ev && prev && training.previous
      ? [
          `## Against ${training.previous}`,
          '',
          `Both measured by \`npm run eval:base\` on this machine (its \`eval.json\` beside each model).`,
          '',
          `| | ${training.previous} | ${training.name} |`,
          '| --- | --- | --- |',
          ...Object.entries(headline(ev)).map(([k, v]) => `| ${k} | ${headline(prev)[k] ?? '—'} | ${v} |`),
          '',
        ]
      : []),
    '## Quality (`npm run eval:base`)',
    '',
    ...(ev
      ? [
          ev.classifier
            ? `A ${ev.categories.length}-way category classifier (a small CNN, the concept lab's judge: class-balanced batches, noise augmentation, ${ev.classifier.steps} steps) trained on the real training images of the top-level categories with ≥ 100 images reaches ${pct(ev.classifier_heldout_accuracy)} on the held-out real images (mean over categories; chance ${pct(ev.chance)}). Each category prompt is the category's name alone ("animals", "signs and symbols"), 25 DDIM steps, guidance ${String(ev.guidance)}.`
            : `A ${ev.categories.length}-way category classifier (an MLP on 16×16 thumbnails) trained on the real training images of the top-level categories with ≥ 100 images reaches ${pct(ev.classifier_heldout_accuracy)} on the held-out real images (chance ${pct(ev.chance)}).`,
          '',
          `| metric | value |`,
          `| --- | --- |`,
          `| generated samples classified as their prompt's category, overall${ev.guidance !== undefined ? ` (guidance ${String(ev.guidance)})` : ''} | **${pct(ev.generated_accuracy.overall)}** = ${ev.generated_accuracy.vs_chance.toFixed(2)}× chance (goal ≥ 4×) |`,
          ...(ev.by_guidance ?? []).slice(1).map((g) => `| … overall at guidance ${String(g.guidance)} | ${pct(g.overall)} = ${g.vs_chance.toFixed(2)}× chance |`),
          ...Object.entries(ev.generated_accuracy.per_category).map(([c, a]) => `| … ${c}${ev.guidance !== undefined ? ` (guidance ${String(ev.guidance)})` : ''} | ${pct(a)} |`),
          `| Fréchet distance, generated vs held-out (${ev.frechet.samples} samples, ${ev.frechet.feature_dim}-d classifier features) | ${ev.frechet.generated_vs_heldout.toFixed(2)} |`,
          `| Fréchet distance, real training subset vs held-out (the floor at this sample size) | ${ev.frechet.train_subset_vs_heldout.toFixed(2)} |`,
          `| one 64×64 image, 25 DDIM steps with guidance, this CPU${ev.sample_threads ? `, ${String(ev.sample_threads)} thread (median of 3)` : ''} | ${ev.sample_ms_64px_25steps_cfg.toFixed(0)} ms |`,
          ...(ev.speckle
            ? [
                '',
                `### Speckle and prompt sensitivity`,
                '',
                `Speckle is the mean absolute 4-neighbour Laplacian in [0, 1] units; the training images' is ${ev.speckle.training_images.toFixed(3)} (clipart's edges). Prompt sensitivity: the ${ev.speckle.prompts.length} category prompts, each at seeds ${ev.speckle.seeds.join(', ')}, one image per call (guidance ${String(ev.speckle.guidance)}); RMS distance of the images averaged over 4×4-pixel cells, between prompts at one seed and between seeds at one prompt.`,
                '',
                '| sampler | steps | speckle | × training | prompts apart | seeds apart | prompts / seeds |',
                '| --- | --- | --- | --- | --- | --- | --- |',
                ...ev.speckle.by_sampler.map(
                  (r) =>
                    `| ${r.sampler} | ${r.steps} | ${r.speckle.toFixed(3)} | ${r.vs_training.toFixed(2)} | ${r.prompt_distance.toFixed(3)} | ${r.seed_distance.toFixed(3)} | ${r.prompt_vs_seed.toFixed(2)} |`,
                ),
              ]
            : []),
          ...(ev.denoiser
            ? [
                '',
                '### Denoiser',
                '',
                "Held-out images noised to timestep t and denoised once (their own captions): the share of the noise that passes into x̂₀ at the finest scale (the regression slope of the Laplacian of x̂₀ − x₀ on that of the noise; missing detail does not count). Against a UNet that outputs 0 (the preconditioning's skip term alone).",
                '',
                '| t | σ | kept by the model | kept by the skip term alone |',
                '| --- | --- | --- | --- |',
                ...ev.denoiser.map((r) => `| ${r.t} | ${r.sigma.toFixed(3)} | ${pct(r.kept)} | ${pct(r.skip_only)} |`),
              ]
            : []),
        ]
      : ['Not evaluated yet: run `npm run eval:base -- --write`.']),
    '',
    ...limitations(vocab.length, typeof text.spare_buckets === 'number' ? text.spare_buckets : 0),
    '## Architecture',
    '',
    '```json',
    JSON.stringify({ unet: config.unet, text_encoder: { ...text, vocab: `${vocab.length} words (vocab.txt)` }, diffusion: config.diffusion }, null, 1),
    '```',
    '',
    '## Data',
    '',
    "Debian's `openclipart-png` (Open Clip Art Library, public domain). Captions come from the file's words (author names and series numbers removed) plus its folder path; pictures are flattened onto white, trimmed, padded to a square and resized; near-duplicates are removed; 6 % of each top-level category is held out. Recipe: `tools/clipart.ts`.",
    '',
    manifest
      ? `${manifest.files} files → ${manifest.unreadable} unreadable, ${manifest.duplicates} near-duplicates removed → ${manifest.kept} images: ${manifest.train.images} for training, ${manifest.heldout.images} held out. Categories: ${Object.entries(
          manifest.categories,
        )
          .map(([c, n]) => `${c} ${n}`)
          .join(', ')}.`
      : '',
    '',
    '## Samples',
    '',
    `![samples](samples.png)`,
    '',
    `Rows: seeds 1–4; columns: ${SAMPLE_PROMPTS.map((p) => `"${p}"`).join(', ')}. DDIM, 30 steps, guidance 4.`,
    '',
    '## Reproduce',
    '',
    '```sh',
    ...phases.map(
      (p, i) =>
        `npm run train:base -- --resolution ${String(config.unet.sample_size)}${p.name !== `clipart-${String(config.unet.sample_size)}` ? ` --name ${p.name}` : ''}${p.previous ? ` --previous ${p.previous}` : ''}${p.init_from ? ` --init-from ${p.init_from}` : ''}${i > 0 ? ` --run-dir .data/runs/${p.name}-phase${i + 1}` : ''} --steps ${p.steps} --batch ${p.batch}${p.caption_tag_dropout !== undefined ? ` --tag-dropout ${String(p.caption_tag_dropout)} --category-balance ${String(p.category_balance ?? 0)}` : ''}${i === 0 ? '   # add --resume after an interruption' : ''}`,
    ),
    '```',
    '',
    'Licence: the weights are released under the same terms as this repository; the training data is public domain.',
    '',
  ];
  writeFileSync(join(modelDir, 'MODEL_CARD.md'), lines.join('\n'));
}

/** Chance that among `words` new words (outside the vocabulary) some two hash into the same of `rows` spare rows. */
export function sharedRowChance(words: number, rows: number): number {
  if (rows <= 0) return 1;
  let apart = 1;
  for (let i = 1; i < words; i++) apart *= Math.max(0, 1 - i / rows);
  return 1 - apart;
}

/** What an artist trips over first with this model's word tokenizer (native/src/model.cpp, WordTokenizer). */
export function limitations(vocabWords: number, spareRows: number): string[] {
  const pct = (x: number) => `${Math.round(100 * x)} %`;
  return [
    '## Limitations',
    '',
    spareRows > 0
      ? `- **Words it does not know share a few rows.** The text encoder knows the ${vocabWords} words of \`vocab.txt\` (the training captions' words). Any other word (a new trigger word, but also "knight" or "painterly") is hashed (FNV-1a 64) into one of only ${spareRows} spare embedding rows, so two new words share one meaning with chance 1/${spareRows}, and some two of several do often (${pct(sharedRowChance(5, spareRows))} of the time for 5 new words, ${pct(sharedRowChance(10, spareRows))} for 10). An adapter trained on one of them then also answers to the other. Shira Studio marks such words in prompt and trigger fields and offers a trigger word on a free row. **A future built-in model should have far more spare rows** (thousands: the chance for 10 words falls to ${pct(sharedRowChance(10, 4096))} at 4096), or a subword tokenizer.`
      : `- **Words it does not know mean nothing.** The text encoder knows the ${vocabWords} words of \`vocab.txt\`; every other word is the same unknown token, so a new trigger word cannot be told apart from any other. A future built-in model should hash new words into thousands of spare rows.`,
    '- **Small pictures.** It draws small clipart-like pictures; anything photographic or detailed is out of reach.',
    '',
  ];
}
