// The models.* API methods: the built-in base models and the user's Stable Diffusion checkpoints (checkpoints.ts),
// and the word check against a model's vocabulary (words.ts).
import type { HandlersOf } from '../registry';
import type { Checkpoints } from './checkpoints';
import type { WordChecker } from './words';

export function modelHandlers(checkpoints: Checkpoints, words: WordChecker): HandlersOf<'models'> {
  return {
    'models.list': () => checkpoints.list(),
    'models.get': ({ id }) => checkpoints.get(id),
    'models.add': (input) => checkpoints.add(input),
    'models.remove': ({ id }) => checkpoints.remove(id),
    'models.setPrediction': ({ id, prediction }) => checkpoints.setPrediction(id, prediction),
    'models.rehash': ({ id }) => checkpoints.rehash(id),
    'models.cancelHash': ({ id }) => checkpoints.cancelHash(id),
    'models.checkWords': ({ text, baseModelId, suggest }) => words.check(text, baseModelId, suggest ?? false),
  };
}
