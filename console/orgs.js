// Organizations (root admin): list, create, issue an org admin token.
import { api } from './api.js';
import { h, field, errorBox, showError, hideError, busy, when } from './dom.js';
import { issueToken } from './tokens.js';

export function orgsPage(view, session) {
  const slot = h('div', { class: 'reveal-slot' });
  const name = h('input', { type: 'text', id: 'org-name', autocomplete: 'off', maxlength: '200' });
  const err = errorBox();
  const create = h('button', { type: 'submit', class: 'primary' }, 'Create organization');
  const form = h('form', { id: 'org-form', class: 'row-form', novalidate: true },
    field('Name', name), create);
  const listErr = errorBox();
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty', hidden: true }, 'No organizations yet. Create the first one above.');

  view.append(
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Organizations')),
    slot,
    h('section', { class: 'card', 'aria-labelledby': 'new-org-h' },
      h('h2', { id: 'new-org-h' }, 'Create an organization'), form, err),
    h('section', { 'aria-labelledby': 'orgs-h' },
      h('h2', { id: 'orgs-h' }, 'All organizations'), listErr,
      h('table', { class: 'list', id: 'orgs-table' },
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'ID'),
          h('th', { scope: 'col' }, 'Created'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        tbody),
      empty));

  function row(org) {
    return h('tr', { 'data-org': org.id },
      h('td', { 'data-label': 'Name' }, h('a', { href: `#/orgs/${encodeURIComponent(org.id)}/keys`, class: 'strong' }, org.name)),
      h('td', { 'data-label': 'ID' }, h('code', null, org.id)),
      h('td', { 'data-label': 'Created' }, when(org.created_at)),
      h('td', { class: 'actions-cell' },
        h('button', { type: 'button', class: 'small issue-token', onclick: () => issueToken(org, slot) }, 'Issue admin token')));
  }

  function show(orgs) {
    session.orgs = orgs.toSorted((a, b) => a.name.localeCompare(b.name) || a.created_at.localeCompare(b.created_at));
    tbody.replaceChildren(...session.orgs.map(row));
    empty.hidden = orgs.length > 0;
  }

  async function load() {
    try {
      show((await api('GET', '/orgs')).orgs);
      hideError(listErr);
    } catch (e) {
      showError(listErr, e);
    }
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    hideError(err);
    busy(create, async () => {
      try {
        const org = await api('POST', '/orgs', { name: name.value });
        name.value = '';
        show([...session.orgs.filter((o) => o.id !== org.id), org]);
        tbody.querySelector(`tr[data-org="${CSS.escape(org.id)}"] a`).focus();
      } catch (e) {
        showError(err, e);
        name.focus();
      }
    });
  });

  show(session.orgs);
  load();
  return null;
}
