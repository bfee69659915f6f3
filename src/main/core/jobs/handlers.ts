// The training.* API methods: the durable training queue (training.ts) on the training engine.
import { unsupported } from '../../../shared/errors';
import type { HandlersOf } from '../registry';
import type { TrainingQueue } from './training';

export function trainingHandlers(training: TrainingQueue, hasTrainer: boolean): HandlersOf<'training'> {
  return {
    'training.start': (req) => {
      if (!hasTrainer) throw unsupported('The native engine is not built, so nothing can be trained. Run `npm start` once to build it.');
      return training.enqueue(req);
    },
    'training.list': ({ status }) => training.list(status),
    'training.get': ({ id }) => training.get(id),
    'training.cancel': ({ id }) => training.cancel(id),
    'training.samples': ({ id }) => training.samples(id),
    'training.loss': ({ id }) => training.loss(id),
  };
}
