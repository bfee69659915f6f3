// The models.* API methods: the registered base models and the word check against their vocabulary (words.ts).
import type { BaseModel } from '../../../shared/api';
import type { Db } from '../db/database';
import type { HandlersOf } from '../registry';
import type { WordChecker } from './words';

export function modelHandlers(db: Db, words: WordChecker): HandlersOf<'models'> {
  return {
    'models.list': () => listModels(db),
    'models.checkWords': ({ text, baseModelId, suggest }) => words.check(text, baseModelId, suggest ?? false),
  };
}

function listModels(db: Db): BaseModel[] {
  const rows = db.prepare('SELECT * FROM base_models ORDER BY is_default DESC, name').all() as {
    id: number;
    name: string;
    family: string;
    resolution: number;
    weights_hash: string | null;
    is_default: number;
    created_at: string;
  }[];
  return rows.map((r) => ({ id: r.id, name: r.name, family: r.family, resolution: r.resolution, weightsHash: r.weights_hash, isDefault: r.is_default === 1, createdAt: r.created_at }));
}
