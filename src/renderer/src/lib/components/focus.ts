// Focus helpers shared by dialogs and by controls that appear mid-task (a Cancel button that
// replaces the Import button must take focus, or keyboard users are dropped onto <body>).
import type { Attachment } from 'svelte/attachments';

const FOCUSABLE = [
  'a[href]',
  'button:not([disabled])',
  'input:not([disabled]):not([type="hidden"])',
  'select:not([disabled])',
  'textarea:not([disabled])',
  'summary',
  '[tabindex]:not([tabindex="-1"])',
].join(',');

export function focusables(root: HTMLElement): HTMLElement[] {
  return [...root.querySelectorAll<HTMLElement>(FOCUSABLE)].filter((el) => el.getClientRects().length > 0);
}

export const focusOnMount: Attachment<HTMLElement> = (node) => {
  node.focus();
};

/**
 * Keeps Tab and Shift+Tab cycling inside `node`, focuses its `[data-autofocus]` element (or the
 * first focusable one), and on teardown hands focus back to `returnTo`.
 */
export function trapFocus(returnTo: Element | null): Attachment<HTMLElement> {
  return (node) => {
    const initial = node.querySelector<HTMLElement>('[data-autofocus]') ?? focusables(node)[0] ?? node;
    initial.focus();

    const onKeydown = (event: KeyboardEvent) => {
      if (event.key !== 'Tab') return;
      const items = focusables(node);
      if (items.length === 0) {
        event.preventDefault();
        return;
      }
      const first = items[0];
      const last = items[items.length - 1];
      const active = document.activeElement;
      if (event.shiftKey && (active === first || !node.contains(active))) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && (active === last || !node.contains(active))) {
        event.preventDefault();
        first.focus();
      }
    };
    // Clicks on the backdrop or programmatic focus elsewhere must not leave the dialog.
    const onFocusIn = (event: FocusEvent) => {
      if (event.target instanceof Node && !node.contains(event.target)) (focusables(node)[0] ?? node).focus();
    };
    node.addEventListener('keydown', onKeydown);
    document.addEventListener('focusin', onFocusIn);
    return () => {
      node.removeEventListener('keydown', onKeydown);
      document.removeEventListener('focusin', onFocusIn);
      // The page behind is still `inert` during this teardown; focus it once that update is done.
      if (returnTo instanceof HTMLElement) queueMicrotask(() => returnTo.isConnected && returnTo.focus());
    };
  };
}
