// The generate, generations.*, gallery.* and grids.* API methods: images and the gallery (generations.ts).
import type { EventBus } from '../events';
import type { HandlersOf } from '../registry';
import type { Generations } from './generations';

export function generationHandlers(generations: Generations, events: EventBus): HandlersOf<'generate' | 'generations' | 'gallery' | 'grids'> {
  const changed = (id?: number) => events.emit({ type: 'library.changed', what: 'generations', ...(id === undefined ? {} : { id }) });
  return {
    generate: async (req) => {
      const images = await generations.generate(req);
      changed();
      return images;
    },
    'generations.list': (o) => generations.list(o),
    'generations.get': ({ id }) => generations.get(id),
    'generations.setFavourite': ({ id, favourite }) => generations.setFavourite(id, favourite),
    'generations.setPixelArt': ({ id, pixelArt }) => generations.setPixelArt(id, pixelArt),
    'generations.delete': ({ id }) => {
      const deleted = generations.delete(id);
      if (deleted) changed(id);
      return { deleted };
    },
    'gallery.list': (o) => generations.gallery(o),
    'grids.save': (input) => {
      const grid = generations.saveGrid(input);
      changed();
      return grid;
    },
    'grids.get': ({ id }) => generations.grid(id),
    'grids.delete': ({ id }) => {
      const deleted = generations.deleteGrid(id);
      if (deleted) changed();
      return { deleted };
    },
  };
}
