// The datasets.* API methods: the library's datasets and captions (repo.ts) and imports (import.ts).
import type { EventBus } from '../events';
import type { HandlersOf } from '../registry';
import type { DatasetImporter } from './import';
import type { DatasetRepo } from './repo';

export function datasetHandlers(datasets: DatasetRepo, importer: DatasetImporter, events: EventBus): HandlersOf<'datasets'> {
  const changed = (id: number) => events.emit({ type: 'library.changed', what: 'datasets', id });
  return {
    'datasets.list': () => datasets.list(),
    'datasets.get': ({ id }) => datasets.get(id),
    'datasets.import': (input) => importer.run(input),
    'datasets.cancelImport': ({ importId }) => ({ cancelled: importer.cancel(importId) }),
    'datasets.update': ({ id, ...patch }) => {
      const result = datasets.update(id, patch);
      changed(id);
      return result;
    },
    'datasets.setCaption': ({ imageId, caption }) => datasets.setCaption(imageId, caption),
    'datasets.setCaptions': ({ datasetId, captions }) => {
      const dataset = datasets.setCaptions(datasetId, captions);
      changed(datasetId);
      return dataset;
    },
    'datasets.removeImage': ({ imageId }) => {
      const { datasetId } = datasets.image(imageId);
      const removed = datasets.removeImage(imageId);
      changed(datasetId);
      return { removed };
    },
    'datasets.delete': ({ id }) => {
      const deleted = datasets.delete(id);
      changed(id);
      return { deleted };
    },
  };
}
