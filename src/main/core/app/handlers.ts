// The app.* API methods: what this app is (version, host, data folder, limits) and its health (the library's
// integrity check off the event loop, then the native self-check).
import type { HostKind } from '../../../shared/api';
import { FORMAT_LABELS, MAX_INPUT_PIXELS } from '../datasets/images';
import { MAX_IMPORT_FILES } from '../datasets/scan';
import type { LibraryChecker } from '../db/checker';
import { schemaVersion, type Db } from '../db/database';
import { APP_NAME } from '../paths';
import type { HandlersOf } from '../registry';
import type { Engines } from '../worker/engines';

export const APP_VERSION = '0.1.0';

export function appHandlers(o: { host: HostKind; dataDir: string; db: Db; checker: LibraryChecker; engines: Engines }): HandlersOf<'app'> {
  return {
    'app.info': () => ({
      name: APP_NAME,
      version: APP_VERSION,
      host: o.host,
      dataDir: o.dataDir,
      schemaVersion: schemaVersion(o.db),
      platform: `${process.platform}-${process.arch}`,
      limits: { maxInputPixels: MAX_INPUT_PIXELS, maxImportFiles: MAX_IMPORT_FILES, imageFormats: FORMAT_LABELS },
    }),
    'app.health': async ({ full }) => ({ ...(await o.checker.check(full ?? false)), native: await o.engines.nativeReport() }),
  };
}
