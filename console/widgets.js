// The one-time reveal panel, the confirmation dialog and a roll's grace period.
import { h, uid, select, errorBox, showError, hideError, busy } from './dom.js';

// reveal shows a secret the server answers once. The secret lives only in
// this panel: "Done" removes it, and a reload never brings it back.
export function reveal(slot, { title, secret, note }) {
  const headingId = uid('reveal');
  const code = h('code', { class: 'secret', id: 'reveal-secret' }, secret);
  const status = h('p', { class: 'copy-status', 'aria-live': 'polite' });
  const copy = h('button', { type: 'button', class: 'primary copy', id: 'reveal-copy' }, 'Copy');
  const done = h('button', { type: 'button', class: 'ghost', id: 'reveal-done' }, 'Done, I have stored it');
  const panel = h('section', { class: 'reveal', 'aria-labelledby': headingId },
    h('h2', { id: headingId }, title),
    h('p', { class: 'warn' }, note, ' ', h('strong', null, "It won't be shown again.")),
    h('div', { class: 'secret-row' }, code, copy),
    status,
    h('div', { class: 'actions' }, done));

  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(secret);
      copy.textContent = 'Copied';
      status.textContent = "Copied to the clipboard. Store it somewhere safe now: it won't be shown again.";
    } catch {
      getSelection().selectAllChildren(code);
      status.textContent = "The browser did not allow copying. It is selected: press Ctrl+C (or ⌘C) to copy it. It won't be shown again.";
    }
  });
  done.addEventListener('click', () => {
    panel.remove();
    slot.dispatchEvent(new Event('revealdone'));
  });
  slot.replaceChildren(panel);
  copy.focus();
  return panel;
}

// confirm opens a modal dialog. action(form) runs on confirmation; the dialog
// closes when it succeeds and shows its error otherwise. Escape cancels.
export function confirm({ title, body, fields, label, danger, action }) {
  const headingId = uid('dlg');
  const err = errorBox();
  const ok = h('button', { type: 'submit', class: danger ? 'danger' : 'primary' }, label);
  const cancel = h('button', { type: 'button', class: 'ghost' }, 'Cancel');
  const form = h('form', { class: 'dialog-form', novalidate: true },
    h('h2', { id: headingId }, title), body, fields, err, h('div', { class: 'actions' }, cancel, ok));
  const dlg = h('dialog', { 'aria-labelledby': headingId }, form);
  cancel.addEventListener('click', () => dlg.close());
  dlg.addEventListener('close', () => dlg.remove());
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    hideError(err);
    busy(ok, async () => {
      try {
        await action(form);
        dlg.close();
      } catch (e) {
        showError(err, e);
      }
    });
  });
  document.body.append(dlg);
  dlg.showModal();
  (form.querySelector('input, select') || cancel).focus();
  return dlg;
}

// graceSelect is how long what a roll replaces keeps working: a roll's
// "expires_in".
export const graceSelect = () => select('roll-grace', [['0s', 'Stops working now'], ['1h', 'Keeps working for 1 hour'],
  ['24h', 'Keeps working for 24 hours'], ['168h', 'Keeps working for 7 days']], '0s');
