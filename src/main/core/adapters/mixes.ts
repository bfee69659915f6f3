// Saved mixes: named lists of (adapter, α) the artist keeps, in `mixes` + `mix_entries`. Applying one is the
// mixer's job (mix.apply with a mixId); deleting an adapter removes it from every saved mix (foreign key).
import type { MixEntry, SavedMix } from '../../../shared/api';
import { badInput, notFound } from '../../../shared/errors';
import type { Db } from '../db/database';
import type { AdapterLibrary } from './library';

export class SavedMixes {
  constructor(
    private readonly db: Db,
    private readonly library: AdapterLibrary,
  ) {}

  list(): SavedMix[] {
    const mixes = this.db.prepare('SELECT * FROM mixes ORDER BY updated_at DESC, id DESC').all() as { id: number; name: string; created_at: string; updated_at: string }[];
    const entries = this.db.prepare('SELECT adapter_id, alpha FROM mix_entries WHERE mix_id = ? ORDER BY position, adapter_id');
    return mixes.map((m) => ({
      id: m.id,
      name: m.name,
      entries: (entries.all(m.id) as { adapter_id: number; alpha: number }[]).map((e) => ({ adapterId: e.adapter_id, alpha: e.alpha })),
      createdAt: m.created_at,
      updatedAt: m.updated_at,
    }));
  }

  entries(id: number): MixEntry[] {
    const mix = this.list().find((m) => m.id === id);
    if (!mix) throw notFound(`Mix ${id} does not exist.`);
    return mix.entries;
  }

  save(input: { id?: number; name: string; entries: MixEntry[] }): SavedMix {
    for (const e of input.entries) this.library.summary(e.adapterId);
    const id = this.db.transaction(() => {
      let mixId = input.id;
      const clash = this.db.prepare('SELECT id FROM mixes WHERE name = ?').get(input.name) as { id: number } | undefined;
      if (clash && clash.id !== mixId) throw badInput(`A mix named "${input.name}" already exists; choose another name.`);
      if (mixId !== undefined) {
        const r = this.db.prepare(`UPDATE mixes SET name = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?`).run(input.name, mixId);
        if (r.changes === 0) throw notFound(`Mix ${mixId} does not exist.`);
        this.db.prepare('DELETE FROM mix_entries WHERE mix_id = ?').run(mixId);
      } else {
        mixId = Number(this.db.prepare('INSERT INTO mixes (name) VALUES (?)').run(input.name).lastInsertRowid);
      }
      const put = this.db.prepare('INSERT INTO mix_entries (mix_id, adapter_id, alpha, position) VALUES (?, ?, ?, ?)');
      const seen = new Set<number>();
      for (const [position, e] of input.entries.entries()) {
        if (seen.has(e.adapterId)) throw badInput(`Adapter ${e.adapterId} appears twice in the mix; give it one weight.`);
        seen.add(e.adapterId);
        put.run(mixId, e.adapterId, e.alpha, position);
      }
      return mixId;
    })();
    return this.list().find((m) => m.id === id)!;
  }

  delete(id: number): boolean {
    return this.db.prepare('DELETE FROM mixes WHERE id = ?').run(id).changes > 0;
  }
}
