import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ExpectedError } from '../../../shared/errors';
import { MIGRATIONS, type Migration } from './migrations';

export type Db = Database.Database;

/**
 * Opens (creating if needed) the library database and brings it to the latest schema.
 * `:memory:` is accepted for tests; it still runs the real migrations. `nativeBinding`: the
 * better-sqlite3 binary built for this runtime (Electron's ABI: core/runtime/layout.ts); null = the package's own.
 */
export function openDatabase(file: string, migrations: readonly Migration[] = MIGRATIONS, nativeBinding: string | null = null): Db {
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  const db = new Database(file, nativeBinding ? { nativeBinding } : undefined);
  try {
    // WAL lets readers (the UI listing the library) proceed while a long import commits.
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    migrate(db, migrations);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

export function schemaVersion(db: Db): number {
  return db.pragma('user_version', { simple: true }) as number;
}

export function migrate(db: Db, migrations: readonly Migration[] = MIGRATIONS): number {
  const current = schemaVersion(db);
  const latest = migrations.length ? migrations[migrations.length - 1]!.version : 0;
  if (current > latest) {
    throw new ExpectedError('unsupported', `This library was written by a newer Shira Studio (schema v${current}; this build knows up to v${latest}). Update the app, or open another data folder.`);
  }
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare('INSERT INTO migrations (version, name) VALUES (?, ?)').run(m.version, m.name);
      // user_version is part of the database header and is rolled back with the transaction.
      db.pragma(`user_version = ${m.version}`);
    })();
  }
  return schemaVersion(db);
}
