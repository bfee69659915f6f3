// Built-in base models ship in resources/models/<name>/ (config.json, model.safetensors, MODEL_CARD.md).
// At start the core registers each one it finds. Registration is idempotent and keyed by name; a changed
// weights file updates its hash, which is the identity adapters are checked against. A built-in whose
// config.json says `"supersedes": "<name>"` replaces that one as the default for new work, while the older
// one stays registered for the adapters trained on it (their recorded identity is its weights' hash).
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Db } from '../db/database';

export interface BuiltinModel {
  name: string;
  family: string;
  resolution: number;
  configJson: string;
  weightsPath: string;
  weightsHash: string;
  /** The built-in this one replaces as the default (config.json's "supersedes"), if any. */
  supersedes: string | null;
}

export const MODEL_FAMILY = 'shira-studio-pixel-unet';

export function findBuiltinModels(resourcesDir: string): BuiltinModel[] {
  const root = join(resourcesDir, 'models');
  if (!existsSync(root)) return [];
  const out: BuiltinModel[] = [];
  for (const name of readdirSync(root).sort()) {
    const dir = join(root, name);
    const configFile = join(dir, 'config.json');
    const weightsPath = join(dir, 'model.safetensors');
    if (!existsSync(configFile) || !existsSync(weightsPath)) continue;
    const configJson = readFileSync(configFile, 'utf8');
    const config = JSON.parse(configJson) as { unet?: { sample_size?: number }; supersedes?: unknown };
    out.push({
      name,
      family: MODEL_FAMILY,
      resolution: config.unet?.sample_size ?? 0,
      configJson,
      weightsPath,
      weightsHash: createHash('sha256').update(readFileSync(weightsPath)).digest('hex'),
      supersedes: typeof config.supersedes === 'string' ? config.supersedes : null,
    });
  }
  return out;
}

export function registerBuiltinModels(db: Db, models: readonly BuiltinModel[]): void {
  db.transaction(() => {
    for (const m of models) {
      db.prepare(
        `INSERT INTO base_models (name, family, resolution, config_json, weights_path, weights_hash)
         VALUES (@name, @family, @resolution, @configJson, @weightsPath, @weightsHash)
         ON CONFLICT (name) DO UPDATE SET family = excluded.family, resolution = excluded.resolution,
           config_json = excluded.config_json, weights_path = excluded.weights_path, weights_hash = excluded.weights_hash`,
      ).run(m);
    }
    const current = db.prepare('SELECT name FROM base_models WHERE is_default = 1').get() as { name: string } | undefined;
    const next = newestBuiltin(models, current?.name);
    if (next !== undefined && next !== current?.name) {
      db.prepare('UPDATE base_models SET is_default = 0 WHERE is_default = 1').run();
      db.prepare('UPDATE base_models SET is_default = 1 WHERE name = ?').run(next);
    }
  })();
}

/**
 * New work goes to the newest built-in: from `from` (the current default; without one, the first built-in that
 * nothing supersedes) along the "supersedes" chain (v2 → v3 → …) to its end. The default is only ever set from
 * here: there is no user choice to overrule.
 */
export function newestBuiltin(models: readonly BuiltinModel[], from?: string): string | undefined {
  const successor = new Map(models.flatMap((m) => (m.supersedes ? [[m.supersedes, m.name] as const] : [])));
  let name: string | undefined = from ?? models.find((m) => !successor.has(m.name))?.name ?? models[0]?.name;
  for (const seen = new Set<string>(); name !== undefined && successor.has(name) && !seen.has(name);) {
    seen.add(name);
    name = successor.get(name);
  }
  return name;
}
