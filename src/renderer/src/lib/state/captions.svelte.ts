// The caption editor: bulk edits across a whole dataset, previewed before anything is stored, plus the tag
// frequencies that show what the captions actually say. Every change arrives as proposals (image, caption before,
// caption after) that the artist applies or discards. That is the seam for a captioning model: a tagger run by the
// engine would hand over proposals for the same preview, and nothing here would change.
import type { Dataset } from '../../../../shared/api';
import { editCaption, tagFrequency, type CaptionEdit } from '../captions';
import { errorMessage } from '../errors';
import type { DatasetsState } from './datasets.svelte';

export interface CaptionProposal {
  imageId: number;
  path: string;
  before: string;
  after: string;
}

export class CaptionEditorState {
  find = $state('');
  replace = $state('');
  tag = $state('');
  /** What the artist is about to apply: a label ("Remove “knight”") and only the captions that change. */
  pending = $state.raw<{ label: string; proposals: CaptionProposal[] } | null>(null);
  applying = $state(false);
  error = $state<string | null>(null);

  readonly #datasets: DatasetsState;
  readonly frequency = $derived(tagFrequency(this.#dataset()?.images.map((i) => i.caption) ?? []));

  constructor(datasets: DatasetsState) {
    this.#datasets = datasets;
  }

  #dataset(): Dataset | null {
    return this.#datasets.detail;
  }

  /** Previews one bulk edit over every caption of the dataset, the trigger word kept first. */
  preview(edit: CaptionEdit, label: string): void {
    const dataset = this.#dataset();
    if (!dataset) return;
    const proposals = dataset.images.map((i) => ({ imageId: i.id, path: i.relPath, before: i.caption, after: editCaption(i.caption, edit, dataset.triggerWord) })).filter((p) => p.after !== p.before);
    this.propose(label, proposals);
  }

  /** Proposals from any source (a bulk edit, later a captioning model), shown until applied or discarded. */
  propose(label: string, proposals: CaptionProposal[]): void {
    this.pending = { label, proposals };
    this.error = null;
  }

  discard(): void {
    this.pending = null;
    this.error = null;
  }

  async apply(): Promise<void> {
    const pending = this.pending;
    if (!pending || this.applying) return;
    if (pending.proposals.length === 0) {
      this.pending = null;
      return;
    }
    this.applying = true;
    try {
      await this.#datasets.setCaptions(pending.proposals.map((p) => ({ imageId: p.imageId, caption: p.after })));
      this.pending = null;
      this.error = null;
    } catch (error) {
      this.error = errorMessage(error);
    } finally {
      this.applying = false;
    }
  }
}
