import { ApiCallError } from '../../../../shared/errors';
import { fieldErrorMessage } from '../errors';

/**
 * One in-place editable value (a caption, a dataset's name). While the user types, the draft wins;
 * otherwise the value follows its source, so a refresh from the core shows without any syncing.
 */
export class InlineEdit {
  #draft = $state<string | null>(null);
  saving = $state(false);
  error = $state<string | null>(null);
  readonly #source: () => string;
  readonly #save: (value: string) => Promise<void>;
  readonly #onFailure: (error: unknown) => void;
  readonly #validate: (value: string) => string | null;

  /**
   * `onFailure` hears about failures that are not the user's input (those stay beside the field);
   * `validate` catches what the user can fix before a round trip, returning the message to show.
   */
  constructor(source: () => string, save: (value: string) => Promise<void>, onFailure: (error: unknown) => void, validate: (value: string) => string | null = () => null) {
    this.#source = source;
    this.#save = save;
    this.#onFailure = onFailure;
    this.#validate = validate;
  }

  get value(): string {
    return this.#draft ?? this.#source();
  }

  set value(next: string) {
    this.#draft = next;
    this.error = null;
  }

  get dirty(): boolean {
    return this.#draft !== null && this.#draft !== this.#source();
  }

  revert(): void {
    this.#draft = null;
    this.error = null;
  }

  async commit(): Promise<void> {
    if (this.saving) return;
    if (!this.dirty) {
      this.#draft = null;
      return;
    }
    const draft = this.#draft ?? '';
    const problem = this.#validate(draft);
    if (problem) {
      this.error = problem;
      return;
    }
    this.saving = true;
    try {
      await this.#save(draft);
      this.#draft = null;
      this.error = null;
    } catch (error) {
      // Keep the draft so nothing typed is lost; the message says what to fix.
      this.error = fieldErrorMessage(error);
      if (!(error instanceof ApiCallError && error.type === 'bad_input')) this.#onFailure(error);
    } finally {
      this.saving = false;
    }
  }
}
