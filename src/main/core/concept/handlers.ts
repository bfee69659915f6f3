// The concept.* API methods: concept-loss measurements of the user's own adapters (service.ts).
import type { HandlersOf } from '../registry';
import type { Engines } from '../worker/engines';
import type { ConceptService } from './service';

export function conceptHandlers(concept: ConceptService, engines: Engines): HandlersOf<'concept'> {
  return {
    'concept.evaluate': (req) => engines.serial(() => concept.evaluate(req)),
    'concept.latest': ({ adapterIds }) => concept.latest(adapterIds),
  };
}
