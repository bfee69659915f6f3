// Built-in base models ship in resources/models/<name>/ (config.json, model.safetensors, MODEL_CARD.md).
// At start the core registers each one it finds; the first becomes the default when none is set.
// Registration is idempotent and keyed by name; a changed weights file updates its hash, which is
// the identity adapters are checked against.
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
    const config = JSON.parse(configJson) as { unet?: { sample_size?: number } };
    out.push({
      name,
      family: MODEL_FAMILY,
      resolution: config.unet?.sample_size ?? 0,
      configJson,
      weightsPath,
      weightsHash: createHash('sha256').update(readFileSync(weightsPath)).digest('hex'),
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
    const hasDefault = db.prepare('SELECT 1 FROM base_models WHERE is_default = 1').get();
    if (!hasDefault && models.length) db.prepare('UPDATE base_models SET is_default = 1 WHERE name = ?').run(models[0]!.name);
  })();
}
