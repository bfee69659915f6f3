// MODEL_CARD.md for a built-in model, from what the run recorded (training.json) and the data
// manifest — never typed by hand, so the card cannot drift from the weights beside it.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SAMPLE_PROMPTS } from './base-model';

export function writeModelCard(modelDir: string, dataDir: string): void {
  const training = JSON.parse(readFileSync(join(modelDir, 'training.json'), 'utf8')) as {
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
  };
  const config = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as { unet: Record<string, unknown>; text_encoder: { vocab: string[] } & Record<string, unknown>; diffusion: Record<string, unknown> };
  const manifest = existsSync(join(dataDir, 'manifest.json'))
    ? (JSON.parse(readFileSync(join(dataDir, 'manifest.json'), 'utf8')) as { files: number; unreadable: number; duplicates: number; kept: number; train: { images: number }; heldout: { images: number }; categories: Record<string, number> })
    : null;
  const { vocab, ...text } = config.text_encoder;
  const evalFile = join(modelDir, 'eval.json');
  const ev = existsSync(evalFile)
    ? (JSON.parse(readFileSync(evalFile, 'utf8')) as {
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
      })
    : null;
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  const gpu = training.device.startsWith('cuda');
  const lines = [
    `# ${training.name} — Shira Studio's built-in base model`,
    '',
    `A small text-to-image diffusion model (pixel space, ${String(config.unet.sample_size)}×${String(config.unet.sample_size)}) trained by this project on public-domain clipart, so the app works offline out of the box. It is a test bed for style adapters (SHiRA and LoRA), not a general image model: expect clipart-like shapes and colours on white.`,
    '',
    '## Training hardware',
    '',
    `Trained on **${gpu ? 'a CUDA GPU' : 'CPU'}** — ${training.hardware}, ${training.threads} thread(s), device \`${training.device}\`. ${gpu ? '' : 'No GPU was available to the session that trained these weights; a longer GPU run (`npm run train:base -- --device cuda --steps 40000`) will give a better model with the same recipe.'}`,
    '',
    '| | |',
    '| --- | --- |',
    `| steps × batch | ${training.steps} × ${training.batch} |`,
    `| learning rate | ${training.lr} (AdamW, cosine, EMA ${training.ema}, horizontal flips, 10 % caption dropout${training.caption_tag_dropout ? `, ${pct(training.caption_tag_dropout)} caption tag dropout` : ''}${training.category_balance ? `, categories drawn ∝ size^(1−${String(training.category_balance)})` : ''}) |`,
    `| wall time | ${(training.wall_seconds / 60).toFixed(1)} min over ${training.sessions} sitting(s) |`,
    `| training loss (v-prediction MSE${config.diffusion.sigma_data !== undefined && config.diffusion.sigma_data !== 1 ? `, σ_d = ${String(config.diffusion.sigma_data)}` : ''}) | ${training.result.first_loss?.toFixed(4) ?? '?'} at the first step → ${training.result.final_loss?.toFixed(4) ?? '?'} at the last |`,
    `| parameters | ${training.result.trainable?.toLocaleString('en') ?? '?'} (UNet + text encoder) |`,
    `| weights | fp16 safetensors, ${(training.weights.bytes / 2 ** 20).toFixed(1)} MiB, ${training.weights.tensors} tensors |`,
    '',
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
          `| generated samples classified as their prompt's category, overall${ev.guidance !== undefined ? ` (guidance ${String(ev.guidance)})` : ''} | **${pct(ev.generated_accuracy.overall)}** = ${ev.generated_accuracy.vs_chance.toFixed(2)}× chance (target ≥ 3×) |`,
          ...(ev.by_guidance ?? []).slice(1).map((g) => `| … overall at guidance ${String(g.guidance)} | ${pct(g.overall)} = ${g.vs_chance.toFixed(2)}× chance |`),
          ...Object.entries(ev.generated_accuracy.per_category).map(([c, a]) => `| … ${c}${ev.guidance !== undefined ? ` (guidance ${String(ev.guidance)})` : ''} | ${pct(a)} |`),
          `| Fréchet distance, generated vs held-out (${ev.frechet.samples} samples, ${ev.frechet.feature_dim}-d classifier features) | ${ev.frechet.generated_vs_heldout.toFixed(2)} |`,
          `| Fréchet distance, real training subset vs held-out (the floor at this sample size) | ${ev.frechet.train_subset_vs_heldout.toFixed(2)} |`,
          `| one 64×64 image, 25 DDIM steps with guidance, this CPU${ev.sample_threads ? `, ${String(ev.sample_threads)} thread (median of 3)` : ''} | ${ev.sample_ms_64px_25steps_cfg.toFixed(0)} ms |`,
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
      ? `${manifest.files} files → ${manifest.unreadable} unreadable, ${manifest.duplicates} near-duplicates removed → ${manifest.kept} images: ${manifest.train.images} for training, ${manifest.heldout.images} held out. Categories: ${Object.entries(manifest.categories).map(([c, n]) => `${c} ${n}`).join(', ')}.`
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
    `npm run train:base -- --resolution ${String(config.unet.sample_size)} --steps ${training.steps} --batch ${training.batch}${training.caption_tag_dropout !== undefined ? ` --tag-dropout ${String(training.caption_tag_dropout)} --category-balance ${String(training.category_balance ?? 0)}` : ''}   # add --resume after an interruption`,
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
