// The engines.* API methods: which engine generates here, the native worker or ONNX Runtime (service.ts).
import { unsupported } from '../../../shared/errors';
import type { Mixer } from '../adapters/mixer';
import type { HandlersOf } from '../registry';
import type { Engines } from '../worker/engines';
import type { OrtService } from './service';
import { notRunnable } from '../models/checkpoints';

export function ortHandlers(ort: OrtService, mixer: Mixer, engines: Engines): HandlersOf<'engines'> {
  return {
    'engines.choice': async ({ remeasure }) => {
      const base = mixer.resolveBase([]);
      if (!base.weights_path) throw unsupported(notRunnable(base.name));
      return engines.serial(() => ort.chooseEngine(base.weights_path!, remeasure ?? false));
    },
  };
}
