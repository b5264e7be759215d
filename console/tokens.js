// An organization's admin tokens: list, issue (root only) with a one-time
// reveal, revoke, roll.
import { api, path, getToken, setToken, endSession } from './api.js';
import { h, field, muted, errorBox, showError, hideError, busy, when, refreshTimes, fullTime } from './dom.js';
import { reveal, confirm, graceSelect } from './widgets.js';
import { status } from './keys.js';

const TOKEN_KIND = '_orgadmin_';

// sessionPrefix is the prefix of the org admin token this tab is signed in
// with, as the server lists it (tokenPrefix in admintokens.go): the brand,
// the kind and 8 hex digits. Root's token has none.
function sessionPrefix() {
  const token = getToken() || '';
  const i = token.indexOf(TOKEN_KIND);
  return i < 0 ? '' : token.slice(0, i + TOKEN_KIND.length + 8);
}

// issueToken asks for a name and issues an admin token of org (root only),
// revealed once in slot; then it calls issued with the token's record.
export function issueToken(org, slot, issued) {
  const tokenName = h('input', { type: 'text', id: 'token-name', autocomplete: 'off', maxlength: '200', value: 'console' });
  confirm({
    title: `Issue an admin token for ${org.name}`,
    body: h('p', null, 'Whoever holds this token can manage the keys, logs, usage and admin tokens of this organization, and nothing else.'),
    fields: field('Token name', tokenName, 'For your records, e.g. the team that gets it.'),
    label: 'Issue token',
    action: async () => {
      const t = await api('POST', path('orgs', org.id, 'admin-tokens'), { name: tokenName.value });
      reveal(slot, { title: `Admin token for ${org.name}`, secret: t.token,
        note: 'Copy this token now and hand it to the organization’s admin.' });
      issued?.(t);
    },
  });
}

export function tokensPage(view, { org, session }) {
  const base = path('orgs', org.id, 'admin-tokens');
  const slot = h('div', { class: 'reveal-slot' });
  const listErr = errorBox();
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty', hidden: true });
  const refresh = h('button', { type: 'button', class: 'ghost small', id: 'tokens-refresh' }, 'Refresh');
  const issue = session.root
    ? h('button', { type: 'button', class: 'primary small', id: 'token-issue', onclick: () => issueToken(org, slot, load) }, 'Issue admin token')
    : null;

  view.append(slot,
    h('section', { 'aria-labelledby': 'tokens-h' },
      h('div', { class: 'section-head' }, h('h2', { id: 'tokens-h' }, 'Admin tokens'), issue, refresh),
      h('p', { class: 'hint' }, 'An admin token manages this organization through the admin API and this console. ',
        session.root ? 'Each one is shown once, when it is issued or rolled.' : 'Only the root admin can issue one.'),
      listErr,
      h('table', { class: 'list tokens', id: 'tokens-table' },
        h('thead', null, h('tr', null, ['Name', 'Prefix', 'Created', 'Last used', 'Expires', 'Revoked', 'Status']
          .map((t) => h('th', { scope: 'col' }, t)), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        tbody),
      empty));

  function row(t) {
    const st = status(t);
    const mine = !session.root && t.prefix != null && t.prefix === sessionPrefix();
    const audit = h('a', { class: 'button small ghost',
      href: `#/orgs/${encodeURIComponent(org.id)}/audit?target=${encodeURIComponent(t.id)}` }, 'Audit');
    const actions = [audit,
      st === 'active' ? h('button', { type: 'button', class: 'small roll', onclick: () => roll(t, mine) }, 'Roll') : null,
      st !== 'revoked' ? h('button', { type: 'button', class: 'small danger revoke', onclick: () => revoke(t, mine) }, 'Revoke') : null];
    return h('tr', { 'data-token': t.id, 'data-prefix': t.prefix, 'data-status': st, class: st },
      h('td', { 'data-label': 'Name', class: 'strong' }, t.name, mine ? h('span', { class: 'tag', title: 'This tab is signed in with this token' }, 'this session') : null),
      h('td', { 'data-label': 'Prefix', class: 'prefix' }, t.prefix ? h('code', null, t.prefix) : muted('known after its next use')),
      h('td', { 'data-label': 'Created' }, when(t.created_at)),
      h('td', { 'data-label': 'Last used', class: 'last-used' }, t.last_used_at ? when(t.last_used_at) : muted('never')),
      h('td', { 'data-label': 'Expires', class: 'expires' }, t.expires_at ? when(t.expires_at) : muted('never')),
      h('td', { 'data-label': 'Revoked', class: 'revoked-at' }, t.revoked_at ? when(t.revoked_at) : muted('no')),
      h('td', { 'data-label': 'Status' }, h('span', { class: 'badge ' + st,
        title: t.revoked_at ? 'Revoked ' + fullTime(t.revoked_at) : t.expires_at ? (st === 'expired' ? 'Expired ' : 'Expires ') + fullTime(t.expires_at) : null }, st)),
      h('td', { class: 'actions-cell' }, actions));
  }

  async function load() {
    try {
      const { admin_tokens: tokens } = await api('GET', base + '?include_revoked=true');
      tokens.sort((a, b) => b.created_at.localeCompare(a.created_at));
      tbody.replaceChildren(...tokens.map(row));
      empty.hidden = tokens.length > 0;
      empty.textContent = session.root ? 'No admin tokens yet. Issue the first one above.' : 'No admin tokens.';
      hideError(listErr);
    } catch (e) {
      showError(listErr, e);
    }
  }

  const focusRow = (t) => tbody.querySelector(`tr[data-token="${CSS.escape(t.id)}"] a`)?.focus();
  const yours = (what) => h('p', { class: 'warn' }, h('strong', null, 'This tab is signed in with this token: '), what);

  function revoke(t, mine) {
    let signOut = false;
    const dlg = confirm({
      title: `Revoke “${t.name}”?`,
      body: [h('p', null, 'Admin calls with ', t.prefix ? h('code', null, t.prefix + '…') : 'this token',
        ' will be refused at once with 401. The token stays listed as revoked. This cannot be undone.'),
      mine ? yours('revoking it signs you out.') : null],
      label: 'Revoke token',
      danger: true,
      action: async () => {
        await api('POST', `${base}/${encodeURIComponent(t.id)}/revoke`);
        if (mine) {
          signOut = true;
          return;
        }
        await load();
        focusRow(t);
      },
    });
    dlg.addEventListener('close', () => {
      if (signOut) endSession({ message: 'You revoked the admin token this tab was signed in with. Sign in with another one.' });
    });
  }

  function roll(t, mine) {
    const grace = graceSelect();
    confirm({
      title: `Roll “${t.name}”?`,
      body: [h('p', null, 'A new token with the same name is issued and shown once.'),
        mine ? yours('the console goes on with the new one.') : null],
      fields: field('The current token', grace),
      label: 'Roll token',
      action: async () => {
        const fresh = await api('POST', `${base}/${encodeURIComponent(t.id)}/roll`, { expires_in: grace.value });
        if (mine) setToken(fresh.token);
        reveal(slot, { title: `Your rolled admin token “${fresh.name}”`, secret: fresh.token,
          note: mine ? 'This tab now uses it. Copy it now if you will sign in with it again.' : 'Copy this token now and hand it to the organization’s admin.' });
        await load();
      },
    });
  }

  refresh.addEventListener('click', () => busy(refresh, load));
  load();
  const tick = setInterval(() => refreshTimes(tbody), 20000);
  return () => clearInterval(tick);
}
