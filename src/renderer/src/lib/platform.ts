// Shortcut spelling for this machine: ⌘ on Apple keyboards, Ctrl everywhere else.
export const isMac = /Mac|iPhone|iPad/.test(navigator.userAgent);
/** For `aria-keyshortcuts`, which names modifier keys the way KeyboardEvent.key does. */
export const modKey = isMac ? 'Meta' : 'Control';
/** For people: "⌘I" or "Ctrl+I". */
export const modLabel = isMac ? '⌘' : 'Ctrl+';
